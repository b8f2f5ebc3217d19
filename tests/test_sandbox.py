"""Test orders on demand: the sandbox-only endpoint, over real HTTP against the real app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import Engine, func, select

from ordercancel.config import Environment, Settings
from ordercancel.domain import PaymentStatus, ProductionStatus
from ordercancel.storage import service
from ordercancel.storage.schema import orders
from tests.support.live import LiveServer
from tests.support.wire import BY_NUMBER

PATH = "/web-api/sandbox/orders"
JSON_TYPE = "application/json"
JSON = {"Content-Type": JSON_TYPE, "Accept": JSON_TYPE}


def order_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(orders)) or 0)


def create(http: httpx.Client, api_code: str, body: dict[str, object] | None = None) -> httpx.Response:
    return http.post(PATH, json=body or {}, headers={"apiCode": api_code, "Accept": "application/json"})


def cancel(http: httpx.Client, api_code: str, number: str) -> dict[str, object]:
    response = http.post(BY_NUMBER, json={"orderNumber": number}, headers={"apiCode": api_code, **JSON})
    answer: dict[str, object] = response.json()
    return answer


def test_a_test_order_is_created_with_the_documented_defaults(
    http: httpx.Client, api_code: str, engine: Engine
) -> None:
    response = create(http, api_code)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    answer = response.json()
    assert list(answer) == ["orderId", "orderNumber", "status", "paymentStatus", "placedAt"]
    assert answer["orderNumber"].startswith("IMC") and len(answer["orderNumber"]) == 9
    stored = service.find_order(engine, answer["orderId"])
    assert stored.order_number == answer["orderNumber"]
    assert (stored.status, stored.payment_status, stored.engineer) == (
        ProductionStatus.ORDERED,
        PaymentStatus.OK,
        None,
    )


def test_an_empty_body_asks_for_every_default(http: httpx.Client, api_code: str, engine: Engine) -> None:
    response = http.post(PATH, headers={"apiCode": api_code, "Accept": "application/json"})
    assert response.status_code == 200
    assert service.find_order(engine, response.json()["orderId"]).status is ProductionStatus.ORDERED


def test_an_xml_request_gets_an_xml_answer_with_its_own_root_element(
    http: httpx.Client, api_code: str, engine: Engine
) -> None:
    body = "<CreateTestOrderRequest><status>Processing</status><engineer>Ada</engineer></CreateTestOrderRequest>"
    response = http.post(
        PATH, content=body, headers={"apiCode": api_code, "Content-Type": "text/xml", "Accept": "text/xml"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/xml; charset=utf-8"
    root = ElementTree.fromstring(response.content)
    assert root.tag == "CreateTestOrderResponse"
    assert [child.tag for child in root] == [
        "orderId",
        "orderNumber",
        "status",
        "paymentStatus",
        "engineer",
        "placedAt",
    ]
    stored = service.find_order(engine, root.findtext("orderId") or "")
    assert (stored.order_number, stored.status, stored.engineer) == (
        root.findtext("orderNumber"),
        ProductionStatus.PROCESSING,
        "Ada",
    )


@pytest.mark.parametrize(
    ("state", "expected_code"),
    [
        ({}, None),
        ({"status": "Processing"}, None),
        ({"status": "Cancelled"}, 507),
        ({"status": "Draft", "paymentStatus": "PaymentPending"}, 506),
        ({"paymentStatus": "PaymentNOK"}, 506),
        ({"status": "InProduction"}, 508),
        ({"status": "Shipped"}, 508),
        ({"status": "Ordered", "engineer": "Ada"}, 509),
    ],
)
def test_a_test_order_in_a_chosen_state_triggers_its_cancellation_outcome(
    http: httpx.Client, api_code: str, state: dict[str, str], expected_code: int | None
) -> None:
    number = create(http, api_code, dict(state)).json()["orderNumber"]
    answer = cancel(http, api_code, number)
    if expected_code is None:
        assert answer["isCanceled"] is True
    else:
        assert answer["isCanceled"] is False
        assert answer["requestError"]["code"] == expected_code  # type: ignore[index]


def test_a_test_order_belongs_to_the_api_code_that_created_it(
    http: httpx.Client, api_code: str, engine: Engine, settings: Settings
) -> None:
    other = service.create_key(engine, settings.environment, "someone else")
    number = create(http, api_code).json()["orderNumber"]
    refusal = cancel(http, other, number)["requestError"]
    assert refusal == {"message": "Wrong OrderNumber has been applied.", "code": 505}
    assert cancel(http, api_code, number)["isCanceled"] is True


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ((b'{"status": "Paid"}', JSON_TYPE), "unknown status 'Paid'; one of: Draft, Ordered, Processing"),
        ((b'{"paymentStatus": "ok"}', JSON_TYPE), "unknown paymentStatus 'ok'; one of: PaymentPending"),
        (
            (b'{"status": "Shipped", "engineer": "Ada"}', JSON_TYPE),
            "an engineer can only hold an order that is Ordered or Processing",
        ),
        ((b'{"engineer": "' + b"A" * 101 + b'"}', JSON_TYPE), "an engineer's name is 1-100 printable characters"),
        ((b'{"status": 3}', JSON_TYPE), "Wrong request body. Check if all parameters set correctly."),
        ((b'{"status": ', JSON_TYPE), "Wrong request body. Check if all parameters set correctly."),
        ((b"<a><status>Ordered</status><status>Draft</status></a>", "text/xml"), "Wrong request body."),
        ((b"status=Ordered", "application/x-www-form-urlencoded"), "Wrong request body."),
    ],
)
def test_a_bad_field_is_refused_with_501_and_creates_nothing(
    http: httpx.Client, api_code: str, engine: Engine, sent: tuple[bytes, str], message: str
) -> None:
    content, content_type = sent
    before = order_count(engine)
    response = http.post(
        PATH, content=content, headers={"apiCode": api_code, "Content-Type": content_type, "Accept": "application/json"}
    )
    assert response.status_code == 200
    error = response.json()["requestError"]
    assert error["code"] == 501
    assert error["message"].startswith(message)
    assert order_count(engine) == before


@pytest.mark.parametrize("code", ["", "not-a-guid", "0f8fad5b-d9cb-469f-a165-70867728950e"])
def test_an_unknown_api_code_is_401_before_the_body_is_read(http: httpx.Client, engine: Engine, code: str) -> None:
    before = order_count(engine)
    response = http.post(PATH, content=b"{not json", headers={"apiCode": code, **JSON})
    assert response.status_code == 401
    assert response.json() == {"requestError": {"message": "Unauthorized", "code": 401}}
    assert order_count(engine) == before


def test_a_production_api_code_is_401_in_the_sandbox(http: httpx.Client, engine: Engine) -> None:
    production_code = service.create_key(engine, Environment.PRODUCTION, "production")
    response = create(http, production_code)
    assert response.status_code == 401
    assert order_count(engine) == 0


def test_a_revoked_api_code_is_401(http: httpx.Client, api_code: str, engine: Engine, settings: Settings) -> None:
    service.revoke_key(engine, settings.environment, api_code)
    assert create(http, api_code).status_code == 401
    assert order_count(engine) == 0


def test_every_sandbox_response_names_the_sandbox(http: httpx.Client, api_code: str) -> None:
    answers = [create(http, api_code), create(http, "nobody"), http.get("/no/such/path"), http.get(PATH)]
    assert [a.status_code for a in answers] == [200, 401, 404, 405]
    assert {a.headers["x-ordercancel-environment"] for a in answers} == {"sandbox"}


@pytest.fixture
def production(settings: Settings) -> Iterator[httpx.Client]:
    with (
        LiveServer(replace(settings, environment=Environment.PRODUCTION)) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        yield client


def test_the_test_order_path_does_not_exist_in_production(production: httpx.Client, engine: Engine) -> None:
    code = service.create_key(engine, Environment.PRODUCTION, "production")
    response = production.post(PATH, json={}, headers={"apiCode": code, "Accept": "application/json"})
    assert response.status_code == 404
    assert response.headers["x-ordercancel-environment"] == "production"
    assert order_count(engine) == 0
