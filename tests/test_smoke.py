import httpx

from tests.conftest import OrderFactory


def test_an_ordered_order_is_cancelled_over_http(http: httpx.Client, api_code: str, make_order: OrderFactory) -> None:
    order = make_order()
    response = http.post(
        "/web-api/order/CancelOrderByNumber",
        json={"orderNumber": order.order_number},
        headers={"apiCode": api_code, "Accept": "application/json"},
    )
    assert response.status_code == 200
    assert response.json() == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}
