"""The wire contract (docs/contract.md), row by row, against the real app over HTTP.

Every behavioural test runs on both endpoints and in both formats.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select

from ordercancel.config import Environment, Settings
from ordercancel.domain import Order
from ordercancel.storage import service
from ordercancel.storage.schema import cancellation_attempts, orders
from tests.support.orders import OrderFactory
from tests.support.wire import BY_ID, BY_NUMBER, MEDIA, MESSAGES, Caller, decode

FORMATS = ["json", "xml"]
ENDPOINTS = [BY_NUMBER, BY_ID]

NOT_FOUND = {BY_NUMBER: 505, BY_ID: 504}
MISSING = {BY_NUMBER: 503, BY_ID: 502}


def ref(order: Order, endpoint: str) -> str:
    return order.order_number if endpoint == BY_NUMBER else order.order_id


def refused(code: int, **fields: Any) -> dict[str, Any]:
    return {**fields, "isCanceled": False, "requestError": {"message": MESSAGES[code], "code": code}}


def snapshot(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(orders).order_by(orders.c.id))]


def attempts(engine: Engine) -> list[tuple[Any, ...]]:
    query = select(
        cancellation_attempts.c.api_key_id,
        cancellation_attempts.c.order_ref,
        cancellation_attempts.c.outcome,
        cancellation_attempts.c.request_id,
    ).order_by(cancellation_attempts.c.id)
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


@pytest.fixture
def caller(http: httpx.Client, api_code: str) -> Caller:
    return Caller(http, api_code)


# Outcomes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_open_order_is_cancelled_and_stays_cancelled(
    caller: Caller, make_order: OrderFactory, engine: Engine, fmt: str, endpoint: str
) -> None:
    order = make_order(status="Processing")
    response = caller.cancel(fmt, endpoint, ref(order, endpoint))
    assert response.status_code == 200
    assert decode(response) == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}
    stored = service.find_order(engine, order.order_id)
    assert stored.status == "Cancelled"
    assert stored.cancelled_at is not None


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_second_cancellation_is_refused_with_507(
    caller: Caller, make_order: OrderFactory, fmt: str, endpoint: str
) -> None:
    order = make_order()
    assert decode(caller.cancel(fmt, endpoint, ref(order, endpoint)))["isCanceled"] is True
    response = caller.cancel(fmt, endpoint, ref(order, endpoint))
    assert response.status_code == 200
    assert decode(response) == refused(507, orderId=order.order_id, orderNumber=order.order_number)


REFUSED_STATES = [
    # (status, payment status, engineer, code): the documented precedence included.
    ("Cancelled", "PaymentOK", None, 507),
    ("Cancelled", "PaymentNOK", None, 507),
    ("Draft", "PaymentPending", None, 506),
    ("Ordered", "PaymentNOK", None, 506),
    ("InProduction", "PaymentNOK", None, 506),
    ("InProduction", "PaymentOK", None, 508),
    ("ReadyToShip", "PaymentOK", None, 508),
    ("ReadyToPickUp", "PaymentOK", None, 508),
    ("Shipped", "PaymentOK", None, 508),
    ("Delivered", "PaymentOK", None, 508),
    ("Invalid", "PaymentOK", None, 508),
    ("Ordered", "PaymentOK", "Ada", 509),
    ("Processing", "PaymentPending", "Grace", 509),
    ("Processing", "PaymentNOK", "Grace", 506),
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("status", "payment", "engineer", "code"), REFUSED_STATES)
def test_an_order_past_cancellation_is_refused_with_its_code_and_left_alone(
    caller: Caller,
    make_order: OrderFactory,
    engine: Engine,
    fmt: str,
    endpoint: str,
    status: str,
    payment: str,
    engineer: str | None,
    code: int,
) -> None:
    order = make_order(status=status, payment_status=payment, engineer=engineer)
    before = snapshot(engine)
    response = caller.cancel(fmt, endpoint, ref(order, endpoint))
    assert response.status_code == 200
    assert decode(response) == refused(code, orderId=order.order_id, orderNumber=order.order_number)
    assert snapshot(engine) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_unknown_order_number_is_505_and_echoed(caller: Caller, fmt: str) -> None:
    response = caller.cancel(fmt, BY_NUMBER, "IMC975580")
    assert response.status_code == 200
    assert decode(response) == refused(505, orderNumber="IMC975580")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("value", ["0f8fad5b-d9cb-469f-a165-70867728950e", "not-a-guid", "IMC975580"])
def test_an_unknown_or_malformed_order_id_is_504(caller: Caller, fmt: str, value: str) -> None:
    response = caller.cancel(fmt, BY_ID, value)
    assert response.status_code == 200
    assert decode(response) == refused(504)


# Another API code's order answers exactly like an unknown one: tests/test_tenants_and_secrets.py.


@pytest.mark.parametrize("fmt", FORMATS)
def test_order_numbers_are_trimmed_but_compared_case_sensitively(
    caller: Caller, make_order: OrderFactory, fmt: str
) -> None:
    order = make_order()
    assert decode(caller.cancel(fmt, BY_NUMBER, order.order_number.lower())) == refused(
        505, orderNumber=order.order_number.lower()
    )
    assert decode(caller.cancel(fmt, BY_NUMBER, f"  {order.order_number}\t"))["isCanceled"] is True


@pytest.mark.parametrize("fmt", FORMATS)
def test_order_ids_match_in_any_letter_case_and_with_surrounding_blanks(
    caller: Caller, make_order: OrderFactory, fmt: str
) -> None:
    order = make_order()
    response = caller.cancel(fmt, BY_ID, f" {order.order_id.upper()} ")
    assert decode(response) == {"orderId": order.order_id, "orderNumber": order.order_number, "isCanceled": True}


# Missing and malformed bodies ------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [b"{}", b'{"orderNumber": null, "orderId": null}', b'{"other": "x"}', b'{"OrderNumber": "IMC1", "OrderId": "x"}'],
)
def test_a_json_body_without_the_field_is_the_missing_code(caller: Caller, endpoint: str, body: bytes) -> None:
    response = caller.raw(endpoint, body, **{"Content-Type": "application/json"})
    assert response.status_code == 200
    assert decode(response) == refused(MISSING[endpoint])


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_a_blank_value_is_the_missing_code(caller: Caller, fmt: str, endpoint: str, blank: str) -> None:
    assert decode(caller.cancel(fmt, endpoint, blank)) == refused(MISSING[endpoint])


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [
        b"<CancelOrderByNumberRequest/>",
        b"<r><OrderNumber>IMC1</OrderNumber><OrderId>x</OrderId></r>",
        b"<r><orderNumber/><orderId/></r>",
        b'<r xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><orderNumber xsi:nil="true"/>'
        b'<orderId xsi:nil="true"/></r>',
    ],
)
def test_an_xml_body_without_the_field_is_the_missing_code(caller: Caller, endpoint: str, body: bytes) -> None:
    response = caller.raw(endpoint, body, **{"Content-Type": "application/xml"})
    assert decode(response) == refused(MISSING[endpoint])


WRONG_BODIES = [
    ("application/json", b""),
    ("application/json", b"   "),
    ("application/json", b"{"),
    ("application/json", b'{"orderNumber": "IMC1",}'),
    ("application/json", b"[]"),
    ("application/json", b'"IMC000001"'),
    ("application/json", b"42"),
    ("application/json", b"null"),
    ("application/json", b'{"orderNumber": 975580, "orderId": 1}'),
    ("application/json", b'{"orderNumber": true, "orderId": false}'),
    ("application/json", b'{"orderNumber": ["IMC1"], "orderId": ["x"]}'),
    ("application/json", b'{"orderNumber": {"v": "IMC1"}, "orderId": {}}'),
    ("application/json", b'{"orderNumber": "\xff\xfe", "orderId": "\xff\xfe"}'),
    ("text/xml", b""),
    ("text/xml", b"<r><orderNumber>IMC1</orderNumber>"),
    ("text/xml", b"not xml at all"),
    ("text/xml", b"<r><orderNumber><v>IMC1</v></orderNumber><orderId><v/></orderId></r>"),
    (
        "text/xml",
        b"<r><orderNumber>A</orderNumber><orderNumber>B</orderNumber><orderId>A</orderId><orderId>B</orderId></r>",
    ),
    ("text/xml", b"<r><orderNumber>\xff</orderNumber></r>"),
    ("text/plain", b'{"orderNumber": "IMC000001", "orderId": "x"}'),
    ("application/x-www-form-urlencoded", b"orderNumber=IMC000001&orderId=x"),
    ("", b"orderNumber=IMC000001"),
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(("content_type", "body"), WRONG_BODIES)
def test_a_body_that_cannot_be_read_is_501_and_changes_nothing(
    caller: Caller, make_order: OrderFactory, engine: Engine, endpoint: str, content_type: str, body: bytes
) -> None:
    make_order(number="IMC1")
    before = snapshot(engine)
    headers = {"Content-Type": content_type} if content_type else {}
    response = caller.raw(endpoint, body, **headers)
    assert response.status_code == 200
    assert decode(response) == refused(501)
    assert snapshot(engine) == before


HOSTILE_XML = [
    # External entity (XXE): must never be fetched or expanded.
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    b"<r><orderNumber>&x;</orderNumber><orderId>&x;</orderId></r>",
    # Entity expansion ("billion laughs").
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
    b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">]>'
    b"<r><orderNumber>&d;</orderNumber><orderId>&d;</orderId></r>",
    # Parameter entity pulling an external DTD.
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
    b"<r><orderNumber>IMC1</orderNumber></r>",
    # A DTD alone is refused too: nothing in a request needs one.
    b'<?xml version="1.0"?><!DOCTYPE r><r><orderNumber>IMC1</orderNumber><orderId>x</orderId></r>',
    # An internal entity that would spell a real order number.
    b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY n "IMC1">]><r><orderNumber>&n;</orderNumber></r>',
]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("body", HOSTILE_XML, ids=["xxe", "billion-laughs", "parameter-entity", "dtd", "entity"])
def test_xml_with_a_dtd_or_entities_is_501_and_never_expanded(
    caller: Caller, make_order: OrderFactory, engine: Engine, endpoint: str, body: bytes
) -> None:
    make_order(number="IMC1")
    before = snapshot(engine)
    response = caller.raw(endpoint, body, **{"Content-Type": "text/xml", "Accept": "text/xml"})
    assert response.status_code == 200
    assert decode(response) == refused(501)
    assert b"root:" not in response.content
    assert snapshot(engine) == before


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_extra_fields_are_ignored_and_the_root_element_and_namespace_do_not_matter(
    caller: Caller, make_order: OrderFactory, endpoint: str
) -> None:
    order = make_order()
    field = "orderNumber" if endpoint == BY_NUMBER else "orderId"
    body = f'<Anything xmlns="urn:example"><note>hi</note><{field}>{ref(order, endpoint)}</{field}></Anything>'.encode()
    response = caller.raw(endpoint, body, **{"Content-Type": "application/xml; charset=utf-8"})
    assert decode(response)["isCanceled"] is True
    other = make_order()
    response = caller.raw(
        endpoint,
        f'{{"comment": 1, "{field}": "{ref(other, endpoint)}", "extra": [1, 2]}}'.encode(),
        **{"Content-Type": "application/json; charset=utf-8"},
    )
    assert decode(response)["isCanceled"] is True


@pytest.mark.parametrize(
    ("body", "media"), [(b'  \n{"orderNumber": "%s"}', "json"), (b"\n <r><orderNumber>%s</orderNumber></r>", "xml")]
)
def test_without_a_content_type_the_first_non_blank_byte_picks_the_format(
    caller: Caller, make_order: OrderFactory, body: bytes, media: str
) -> None:
    order = make_order()
    response = caller.http.post(
        BY_NUMBER, content=body % order.order_number.encode(), headers={"apiCode": caller.api_code}
    )
    assert "content-type" not in response.request.headers
    assert decode(response)["isCanceled"] is True


def test_a_value_is_escaped_when_echoed_in_xml(caller: Caller) -> None:
    response = caller.cancel("xml", BY_NUMBER, "<IMC&1>")
    assert b"&lt;IMC&amp;1&gt;" in response.content
    assert decode(response) == refused(505, orderNumber="<IMC&1>")


def test_characters_xml_cannot_carry_are_replaced_when_echoed(caller: Caller) -> None:
    response = caller.raw(
        BY_NUMBER, b'{"orderNumber": "IMC\\u0001\\u0000"}', **{"Content-Type": "application/json", "Accept": "text/xml"}
    )
    assert decode(response) == refused(505, orderNumber="IMC\ufffd\ufffd")


# Size ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_body_over_64_kib_is_413_with_code_501(caller: Caller, make_order: OrderFactory, endpoint: str) -> None:
    order = make_order()
    field = "orderNumber" if endpoint == BY_NUMBER else "orderId"
    body = f'{{"{field}": "{ref(order, endpoint)}"}}'.encode().ljust(64 * 1024 + 1)
    response = caller.raw(endpoint, body, **{"Content-Type": "application/json"})
    assert response.status_code == 413
    assert decode(response) == refused(501)
    exactly = body[: 64 * 1024]
    assert decode(caller.raw(endpoint, exactly, **{"Content-Type": "application/json"}))["isCanceled"] is True


def test_an_oversized_body_without_a_length_is_refused_when_it_passes_the_limit(caller: Caller) -> None:
    def chunks() -> Any:
        yield b'{"orderNumber": "'
        for _ in range(100):
            yield b"x" * 1024

    response = caller.http.post(
        BY_NUMBER, content=chunks(), headers={"apiCode": caller.api_code, "Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert decode(response) == refused(501)


# Authentication -------------------------------------------------------------------------------


def unauthorized(response: httpx.Response) -> None:
    assert response.status_code == 401
    assert response.reason_phrase == "Unauthorized"
    assert decode(response) == refused(401)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    "code",
    [
        "",
        "not-a-guid",
        "0f8fad5b-d9cb-469f-a165-70867728950",
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
    ],
)
def test_a_missing_malformed_or_unknown_api_code_is_401(
    caller: Caller, make_order: OrderFactory, engine: Engine, fmt: str, endpoint: str, code: str
) -> None:
    order = make_order()
    before = snapshot(engine)
    unauthorized(caller.cancel(fmt, endpoint, ref(order, endpoint), api_code=code))
    assert snapshot(engine) == before


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_request_without_an_api_code_header_is_401(http: httpx.Client, fmt: str) -> None:
    response = http.post(BY_NUMBER, content=b'{"orderNumber": "IMC1"}', headers={"Accept": MEDIA[fmt]})
    unauthorized(response)


def test_a_revoked_api_code_is_401(
    caller: Caller, make_order: OrderFactory, engine: Engine, settings: Settings
) -> None:
    order = make_order()
    service.revoke_key(engine, settings.environment, caller.api_code)
    unauthorized(caller.cancel("json", BY_NUMBER, order.order_number))
    assert service.find_order(engine, order.order_id).status == "Ordered"


def test_an_api_code_of_the_other_environment_is_401(caller: Caller, engine: Engine, make_order: OrderFactory) -> None:
    production_code = service.create_key(engine, Environment.PRODUCTION, "production")
    unauthorized(caller.cancel("json", BY_NUMBER, make_order().order_number, api_code=production_code))


@pytest.mark.parametrize("header", ["apiCode", "ApiCode", "APICODE", "apicode"])
def test_the_api_code_header_name_is_case_insensitive_and_the_code_too(
    http: httpx.Client, api_code: str, make_order: OrderFactory, header: str
) -> None:
    order = make_order()
    response = http.post(
        BY_NUMBER,
        json={"orderNumber": order.order_number},
        headers={header: api_code.upper(), "Accept": "application/json"},
    )
    assert decode(response)["isCanceled"] is True


def test_authentication_comes_before_the_body_is_read(http: httpx.Client) -> None:
    for body in (b"garbage", b"x" * (200 * 1024)):
        response = http.post(BY_NUMBER, content=body, headers={"apiCode": "nope", "Accept": "application/json"})
        unauthorized(response)


# Negotiation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept", "content_type"),
    [
        (None, "text/xml"),
        ("*/*", "text/xml"),
        ("image/png", "text/xml"),
        ("application/json", "application/json"),
        ("text/json", "text/json"),
        ("text/xml", "text/xml"),
        ("application/xml", "application/xml"),
        ("Application/JSON", "application/json"),
        ("text/xml;q=0.5, application/json", "application/json"),
        ("application/json;q=0.1, text/xml;q=0.9", "text/xml"),
        ("application/json;q=0, application/xml", "application/xml"),
        ("text/html, application/xhtml+xml, text/json;q=0.8, */*;q=0.1", "text/json"),
    ],
)
def test_accept_picks_the_response_format(
    http: httpx.Client, api_code: str, accept: str | None, content_type: str
) -> None:
    headers = {"apiCode": api_code, "Content-Type": "application/json"}
    if accept is not None:
        headers["Accept"] = accept
    response = http.post(BY_NUMBER, content=b'{"orderNumber": "IMC975580"}', headers=headers)
    assert response.headers["content-type"] == f"{content_type}; charset=utf-8"
    assert decode(response) == refused(505, orderNumber="IMC975580")


def test_json_fields_come_in_the_documented_order(caller: Caller, make_order: OrderFactory) -> None:
    order = make_order(status="Shipped")
    response = caller.cancel("json", BY_NUMBER, order.order_number)
    assert response.text == (
        f'{{"orderId":"{order.order_id}","orderNumber":"{order.order_number}","isCanceled":false,'
        f'"requestError":{{"message":"{MESSAGES[508]}","code":508}}}}'
    )


def test_xml_matches_the_published_example_shape(caller: Caller, make_order: OrderFactory) -> None:
    order = make_order(status="Cancelled")
    response = caller.cancel("xml", BY_NUMBER, order.order_number)
    assert response.text == (
        '<?xml version="1.0" encoding="utf-8"?><CancelOrderResponse>'
        f"<orderId>{order.order_id}</orderId><orderNumber>{order.order_number}</orderNumber>"
        "<isCanceled>false</isCanceled><requestError><message>Order has already been cancelled before.</message>"
        "<code>507</code></requestError></CancelOrderResponse>"
    )


# HTTP -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_any_method_but_post_is_405_with_allow(http: httpx.Client, api_code: str, endpoint: str, method: str) -> None:
    response = http.request(method, endpoint, headers={"apiCode": api_code, "Accept": "application/json"})
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert decode(response)["requestError"]["code"] == 405


def test_no_cors_headers_are_ever_sent(http: httpx.Client, api_code: str, make_order: OrderFactory) -> None:
    origin = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    responses = [
        http.options(BY_NUMBER, headers=origin),
        http.post(BY_NUMBER, json={"orderNumber": make_order().order_number}, headers={"apiCode": api_code, **origin}),
        http.post(BY_ID, json={"orderId": "x"}, headers=origin),
    ]
    for response in responses:
        assert not [name for name in response.headers if name.lower().startswith("access-control-")]


def test_an_unknown_path_is_404(http: httpx.Client) -> None:
    response = http.get("/web-api/order/Nothing", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert decode(response)["requestError"] == {"message": "Not Found", "code": 404}


def test_every_response_names_the_environment_and_echoes_a_request_id(http: httpx.Client) -> None:
    response = http.post(BY_NUMBER, headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-ordercancel-environment"] == "sandbox"
    assert response.headers["x-request-id"] == "trace-42"
    generated = http.post(BY_NUMBER, headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces"
    assert len(generated) == 32


# The record of attempts and the no-trace rule ------------------------------------------------------


def test_every_authenticated_attempt_is_recorded_with_its_outcome_and_request_id(
    caller: Caller, make_order: OrderFactory, engine: Engine
) -> None:
    order = make_order()
    caller.http.post(
        BY_NUMBER,
        json={"orderNumber": order.order_number},
        headers={"apiCode": caller.api_code, "X-Request-ID": "first"},
    )
    caller.http.post(
        BY_NUMBER,
        json={"orderNumber": order.order_number},
        headers={"apiCode": caller.api_code, "X-Request-ID": "second"},
    )
    caller.http.post(BY_NUMBER, json={}, headers={"apiCode": caller.api_code, "X-Request-ID": "third"})
    caller.http.post(BY_NUMBER, json={"orderNumber": "x"}, headers={"apiCode": "nope", "X-Request-ID": "fourth"})
    rows = attempts(engine)
    assert [(ref_, outcome, request_id) for _, ref_, outcome, request_id in rows] == [
        (rows[0][1], 0, "first"),
        (rows[0][1], 507, "second"),
        (None, 503, "third"),
    ]
    assert rows[0][1] is not None
    assert len({key for key, *_ in rows}) == 1


def test_refused_requests_of_every_kind_leave_every_order_unchanged(
    caller: Caller, make_order: OrderFactory, engine: Engine
) -> None:
    for status, payment, engineer, _ in REFUSED_STATES:
        make_order(status=status, payment_status=payment, engineer=engineer)
    open_order = make_order()
    before = snapshot(engine)
    for _, body in WRONG_BODIES:
        caller.raw(BY_NUMBER, body, **{"Content-Type": "application/json"})
    for row in before:
        number = row[orders.c.keys().index("order_number")]
        if number != open_order.order_number:
            caller.cancel("json", BY_NUMBER, number)
            caller.cancel("xml", BY_NUMBER, number)
    caller.cancel("json", BY_NUMBER, open_order.order_number, api_code="0f8fad5b-d9cb-469f-a165-70867728950e")
    assert snapshot(engine) == before


def test_health_answers_when_the_database_does(http: httpx.Client) -> None:
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "environment": "sandbox"}
