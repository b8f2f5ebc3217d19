"""The admin HTTP API over the real server: token, JSON in and out, 409 for refused changes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine

from ordercancel.domain import ProcessingStarted
from ordercancel.storage import service
from tests.support.live import ADMIN_TOKEN, LiveServer
from tests.support.orders import OrderFactory
from tests.support.wire import BY_NUMBER


def test_the_admin_api_is_not_there_when_no_token_is_configured(http: httpx.Client, make_order: OrderFactory) -> None:
    order = make_order()
    for path in ("/admin/orders", f"/admin/orders/{order.order_id}/claim"):
        response = http.post(path, json={"engineer": "Ada"}, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert response.status_code == 404


@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", f"Basic {ADMIN_TOKEN}", f"Bearer {ADMIN_TOKEN}x", f"Bearer {ADMIN_TOKEN[:-1]}"],
)
def test_a_request_without_the_admin_token_is_refused_with_401_and_changes_nothing(
    admin_server: LiveServer, engine: Engine, make_order: OrderFactory, authorization: str | None
) -> None:
    order = make_order()
    headers = {} if authorization is None else {"Authorization": authorization}
    response = httpx.post(
        f"{admin_server.url}/admin/orders/{order.order_id}/claim", json={"engineer": "Ada"}, headers=headers
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json() == {"error": "a valid admin token is required"}
    assert service.find_order(engine, order.order_id) == order


def test_the_bearer_scheme_is_case_insensitive(admin_server: LiveServer, make_order: OrderFactory) -> None:
    order = make_order()
    response = httpx.get(
        f"{admin_server.url}/admin/orders/{order.order_id}", headers={"Authorization": f"bearer {ADMIN_TOKEN}"}
    )
    assert response.status_code == 200


def test_an_order_is_created_and_answered_as_orders_show_json_prints_it(
    admin_http: httpx.Client, engine: Engine, api_code: str
) -> None:
    response = admin_http.post(
        "/admin/orders",
        json={"apiCode": api_code, "orderNumber": "PLATFORM-77", "status": "Processing", "paymentStatus": "PaymentOK"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    stored = service.find_order(engine, "PLATFORM-77")
    assert response.json() == service.order_fields(stored)
    assert (stored.status.value, stored.payment_status.value) == ("Processing", "PaymentOK")


def test_an_order_created_without_fields_gets_a_number_and_the_defaults(
    admin_http: httpx.Client, api_code: str
) -> None:
    body = admin_http.post("/admin/orders", json={"apiCode": api_code}).json()
    assert body["orderNumber"].startswith("IMC")
    assert (body["status"], body["paymentStatus"], body["engineer"]) == ("Ordered", "PaymentOK", None)


@pytest.mark.parametrize(
    "case",
    [
        ({"apiCode": "0f8fad5b-d9cb-469f-a165-70867728950e"}, 400, "no active API code"),
        ({}, 400, "apiCode is required"),
        ({"status": "Lost"}, 400, "unknown status 'Lost'"),
        ({"orderNumber": "EXISTING-1"}, 409, "exists already"),
        ({"orderNumber": "no spaces"}, 400, "is not 1-32 letters"),
        ({"engineer": 7}, 400, "engineer must be a string"),
        ({"engineer": "x" * 101}, 400, "an engineer's name is 1-100 printable characters"),
        ({"number": "PLATFORM-9"}, 400, "unknown field 'number'; expected apiCode, orderNumber, orderId"),
    ],
)
def test_an_order_that_cannot_be_created_is_refused_with_the_reason(
    admin_http: httpx.Client,
    engine: Engine,
    make_order: OrderFactory,
    api_code: str,
    case: tuple[dict[str, object], int, str],
) -> None:
    fields, status, reason = case
    make_order(number="EXISTING-1")
    body = {"apiCode": api_code, **fields} if "apiCode" not in fields and fields else fields
    response = admin_http.post("/admin/orders", json=body)
    assert response.status_code == status
    assert reason in response.json()["error"]
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM orders").scalar() == 1


def test_the_lifecycle_runs_over_http_and_each_answer_is_the_order(
    admin_http: httpx.Client, engine: Engine, make_order: OrderFactory
) -> None:
    order = make_order(status="Draft", payment_status="PaymentPending")
    base = f"/admin/orders/{order.order_id}"
    steps = [
        ("/status", {"status": "Ordered"}),
        ("/payment", {"paymentStatus": "PaymentOK"}),
        ("/claim", {"engineer": "Ada"}),
        ("/release", None),
        ("/status", {"status": "Processing"}),
    ]
    for path, body in steps:
        response = admin_http.post(base + path, json=body) if body else admin_http.post(base + path)
        assert response.status_code == 200, response.text
        assert response.json() == service.order_fields(service.find_order(engine, order.order_id))
    final = admin_http.get(base).json()
    assert (final["status"], final["paymentStatus"], final["engineer"]) == ("Processing", "PaymentOK", None)


@pytest.mark.parametrize(
    "case",
    [
        ({"status": "Shipped"}, "/status", {"status": "Ordered"}, "cannot move from Shipped to Ordered"),
        ({"status": "Cancelled"}, "/claim", {"engineer": "Ada"}, "is Cancelled: only Ordered or Processing"),
        ({"engineer": "Grace"}, "/claim", {"engineer": "Ada"}, "is claimed by Grace already"),
        ({"engineer": "Grace"}, "/status", {"status": "Cancelled", "operator": "Ada"}, "is claimed by Grace: release"),
        ({}, "/release", {}, "is not claimed by anyone"),
        ({}, "/payment", {"paymentStatus": "PaymentNOK"}, "cannot move from PaymentOK to PaymentNOK"),
    ],
)
def test_a_refused_change_answers_409_with_the_reason_and_changes_nothing(
    admin_http: httpx.Client,
    engine: Engine,
    make_order: OrderFactory,
    case: tuple[dict[str, str], str, dict[str, str], str],
) -> None:
    fields, path, body, reason = case
    order = make_order(**fields)
    response = admin_http.post(f"/admin/orders/{order.order_id}{path}", json=body)
    assert response.status_code == 409
    assert reason in response.json()["error"]
    assert service.find_order(engine, order.order_id) == order


@pytest.mark.parametrize("ref", ["7b0c9a62-9a55-4d6b-8c53-d0c8c1d2c3e4", "IMC999999"])
def test_an_unknown_order_answers_404(admin_http: httpx.Client, ref: str) -> None:
    response = admin_http.post(f"/admin/orders/{ref}/claim", json={"engineer": "Ada"})
    assert response.status_code == 404
    assert response.json() == {"error": f"no order {ref!r}"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "the body is not JSON"),
        (b"[1, 2]", "the body must be a JSON object"),
        (b'"Ada"', "the body must be a JSON object"),
        (b"{}", "engineer is required"),
        (b'{"engineer": "   "}', "engineer is required"),
        (b'{"engineer": ["Ada"]}', "engineer must be a string"),
        (b'{"engineer": "Ada\\u0000"}', "an engineer's name is 1-100 printable characters"),
        (b'{"engineer": "Ada", "enginer": "Ada"}', "unknown field 'enginer'; expected engineer"),
    ],
)
def test_a_bad_body_answers_400_and_changes_nothing(
    admin_http: httpx.Client, engine: Engine, make_order: OrderFactory, content: bytes, reason: str
) -> None:
    order = make_order()
    response = admin_http.post(f"/admin/orders/{order.order_id}/claim", content=content)
    assert response.status_code == 400
    assert response.json() == {"error": reason}
    assert service.find_order(engine, order.order_id) == order


def test_an_oversized_admin_body_is_refused_without_a_traceback(
    admin_http: httpx.Client, make_order: OrderFactory
) -> None:
    order = make_order()
    response = admin_http.post(f"/admin/orders/{order.order_id}/claim", content=b"x" * (65 * 1024))
    assert response.status_code == 413
    assert "Traceback" not in response.text


def test_a_claimed_order_is_refused_509_until_released_and_then_cancelled(
    admin_http: httpx.Client, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order()
    admin_http.post(f"/admin/orders/{order.order_id}/claim", json={"engineer": "Ada"}).raise_for_status()

    def cancel() -> dict[str, object]:
        body: dict[str, object] = admin_http.post(
            BY_NUMBER,
            json={"orderNumber": order.order_number},
            headers={"apiCode": api_code, "Accept": "application/json", "Authorization": ""},
        ).json()
        return body

    assert cancel()["requestError"] == {"message": ProcessingStarted.message, "code": 509}
    admin_http.post(f"/admin/orders/{order.order_id}/release").raise_for_status()
    assert cancel()["isCanceled"] is True
    claimed = admin_http.post(f"/admin/orders/{order.order_id}/claim", json={"engineer": "Ada"})
    assert claimed.status_code == 409


def test_a_release_with_a_body_naming_a_field_is_refused_as_unexpected(
    admin_http: httpx.Client, engine: Engine, make_order: OrderFactory
) -> None:
    order = make_order(engineer="Ada")
    response = admin_http.post(f"/admin/orders/{order.order_id}/release", json={"engineer": "Ada"})
    assert response.status_code == 400
    assert response.json() == {"error": "unknown field 'engineer'; expected no fields"}
    assert service.find_order(engine, order.order_id) == order


def test_an_order_create_with_an_empty_body_is_refused_with_400(admin_http: httpx.Client) -> None:
    response = admin_http.post("/admin/orders", content=b"")
    assert response.status_code == 400
    assert response.json() == {"error": "apiCode is required"}
