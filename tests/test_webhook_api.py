"""The integrators' webhook endpoints over real HTTP, on both databases: register, list, remove,
in JSON and XML; who may see what; which URLs are refused; and who hears of which order's events.

Deliveries go to a real receiver on loopback (tests/support/receiver.py), from the server's own
dispatcher: those tests run a server whose settings allow private addresses, as only tests do.
"""

from __future__ import annotations

import base64
import dataclasses
import uuid
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel.client import InvalidSignature, verify_webhook
from ordercancel.config import Environment, Settings
from ordercancel.events import EventType
from ordercancel.storage import outbox, service
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.receiver import Delivery, Receiver
from tests.support.wire import BY_NUMBER

WEBHOOKS = "/web-api/webhooks"
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
XML = {"Content-Type": "text/xml", "Accept": "text/xml"}
ALL_EVENTS = [kind.value for kind in EventType]
#: A URL the default server (private addresses refused) accepts without looking anything up.
PUBLIC_URL = "https://192.88.99.1/hook"


# Helpers --------------------------------------------------------------------------------------


def register(client: httpx.Client, code: str, url: str, events: list[str] | None = None) -> httpx.Response:
    body: dict[str, object] = {"url": url}
    if events is not None:
        body["events"] = events
    return client.post(WEBHOOKS, json=body, headers={"apiCode": code, **JSON})


def created(client: httpx.Client, code: str, url: str, events: list[str] | None = None) -> dict[str, Any]:
    response = register(client, code, url, events)
    assert response.status_code == 201, response.text
    fields: dict[str, Any] = response.json()
    return fields


def listed(client: httpx.Client, code: str) -> list[dict[str, Any]]:
    response = client.get(WEBHOOKS, headers={"apiCode": code, **JSON})
    assert response.status_code == 200, response.text
    webhooks: list[dict[str, Any]] = response.json()["webhooks"]
    return webhooks


def xml_webhook(element: ElementTree.Element) -> dict[str, Any]:
    """An endpoint as the XML answers render it: <events> holds one <event> each."""
    fields: dict[str, Any] = {}
    for child in element:
        fields[child.tag] = [item.text for item in child] if child.tag == "events" else child.text
    return fields


def endpoint_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                text("SELECT endpoint_id, api_key_id, url FROM webhook_endpoints WHERE removed_at IS NULL")
            )
        ]


def key_id(engine: Engine, settings: Settings, code: str) -> int:
    with engine.connect() as connection:
        return service.active_key_id(connection, settings.environment, code)


def refusal(response: httpx.Response) -> tuple[int, int, str]:
    """(HTTP status, requestError code, message) of a JSON refusal."""
    error = response.json()["requestError"]
    return response.status_code, error["code"], error["message"]


@pytest.fixture
def private_server(settings: Settings) -> Iterator[LiveServer]:
    """The real app as tests alone run it: webhooks may go to loopback, retries come fast; with its dispatcher."""
    allowed = dataclasses.replace(
        settings, webhook_allow_private=True, webhook_schedule=(0.2, 0.2), webhook_dispatcher=True
    )
    with LiveServer(allowed) as live:
        yield live


@pytest.fixture
def private_http(private_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=private_server.url, timeout=10) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


# Register, list, remove ----------------------------------------------------------------------


def test_an_endpoint_is_registered_listed_and_removed_in_json(
    private_http: httpx.Client, engine: Engine, settings: Settings, api_code: str, receiver: Receiver
) -> None:
    endpoint = created(private_http, api_code, receiver.url, [EventType.CANCELLED.value, EventType.CLAIMED.value])
    assert set(endpoint) == {"id", "url", "events", "createdAt", "disabledAt", "disabledReason", "secret"}
    assert endpoint["id"].startswith("ep_")
    assert (endpoint["url"], endpoint["events"]) == (receiver.url, ["order.cancelled", "order.claimed"])
    assert (endpoint["disabledAt"], endpoint["disabledReason"]) == (None, None)
    assert endpoint_rows(engine) == [(endpoint["id"], key_id(engine, settings, api_code), receiver.url)]

    shown = {name: value for name, value in endpoint.items() if name != "secret"}
    assert listed(private_http, api_code) == [shown]

    removed = private_http.delete(f"{WEBHOOKS}/{endpoint['id']}", headers={"apiCode": api_code})
    assert removed.status_code == 204
    assert removed.content == b""
    assert listed(private_http, api_code) == []
    assert endpoint_rows(engine) == []
    again = private_http.delete(f"{WEBHOOKS}/{endpoint['id']}", headers={"apiCode": api_code, **JSON})
    assert refusal(again)[:2] == (404, 404)


@pytest.mark.parametrize(
    "events_xml",
    [
        "<events><event>order.cancelled</event><event>order.claimed</event></events>",
        "<events>order.cancelled,order.claimed</events>",
    ],
    ids=["one-element-each", "comma-separated"],
)
def test_an_endpoint_is_registered_listed_and_removed_in_xml(
    private_http: httpx.Client, engine: Engine, api_code: str, receiver: Receiver, events_xml: str
) -> None:
    body = f"<WebhookRequest><url>{receiver.url}</url>{events_xml}</WebhookRequest>"
    response = private_http.post(WEBHOOKS, content=body, headers={"apiCode": api_code, **XML})
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("text/xml")
    root = ElementTree.fromstring(response.content)
    assert root.tag == "WebhookResponse"
    endpoint = xml_webhook(root)
    assert endpoint["url"] == receiver.url
    assert endpoint["events"] == ["order.cancelled", "order.claimed"]
    assert endpoint["secret"].startswith("whsec_")
    assert [row[0] for row in endpoint_rows(engine)] == [endpoint["id"]]

    listing = private_http.get(WEBHOOKS, headers={"apiCode": api_code, "Accept": "text/xml"})
    assert listing.status_code == 200
    root = ElementTree.fromstring(listing.content)
    assert root.tag == "WebhooksResponse"
    [webhooks] = list(root)
    assert webhooks.tag == "webhooks"
    assert [xml_webhook(item) for item in webhooks] == [
        {name: value for name, value in endpoint.items() if name != "secret"}
    ]

    removed = private_http.delete(f"{WEBHOOKS}/{endpoint['id']}", headers={"apiCode": api_code, "Accept": "text/xml"})
    assert removed.status_code == 204
    assert endpoint_rows(engine) == []


def test_an_endpoint_registered_without_events_hears_of_all_four(http: httpx.Client, api_code: str) -> None:
    assert created(http, api_code, PUBLIC_URL)["events"] == ALL_EVENTS
    assert created(http, api_code, PUBLIC_URL, [])["events"] == ALL_EVENTS
    xml = http.post(
        WEBHOOKS,
        content=f"<WebhookRequest><url>{PUBLIC_URL}</url></WebhookRequest>",
        headers={"apiCode": api_code, **XML},
    )
    assert xml_webhook(ElementTree.fromstring(xml.content))["events"] == ALL_EVENTS


def test_the_secret_is_whsec_and_base64_of_24_bytes_or_more_and_shown_only_at_creation(
    http: httpx.Client, engine: Engine, api_code: str
) -> None:
    first = created(http, api_code, PUBLIC_URL)["secret"]
    second = created(http, api_code, PUBLIC_URL)["secret"]
    for secret in (first, second):
        assert secret.startswith("whsec_")
        assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24
    assert first != second
    for accept in ("application/json", "text/xml"):
        listing = http.get(WEBHOOKS, headers={"apiCode": api_code, "Accept": accept})
        assert listing.status_code == 200
        assert listing.text.count("ep_") == 2
        assert "whsec_" not in listing.text and "secret" not in listing.text
        for secret in (first, second):
            assert secret.removeprefix("whsec_") not in listing.text
    # Kept to sign with, not shown: it is in the database, nowhere in an answer after the first.
    assert len(endpoint_rows(engine)) == 2


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_an_unknown_event_type_is_refused_with_400_and_nothing_is_registered(
    http: httpx.Client, engine: Engine, api_code: str, fmt: str
) -> None:
    if fmt == "json":
        response = register(http, api_code, PUBLIC_URL, ["order.cancelled", "order.shipped"])
    else:
        body = f"<WebhookRequest><url>{PUBLIC_URL}</url><events>order.cancelled,order.shipped</events></WebhookRequest>"
        response = http.post(WEBHOOKS, content=body, headers={"apiCode": api_code, **XML})
    assert response.status_code == 400
    if fmt == "json":
        _, code, message = refusal(response)
    else:
        root = ElementTree.fromstring(response.content)
        assert root.tag == "WebhookResponse"
        code, message = int(root.findtext("requestError/code") or 0), root.findtext("requestError/message") or ""
    assert code == 400
    assert "unknown event type 'order.shipped'" in message
    assert endpoint_rows(engine) == []


def test_a_body_that_cannot_be_read_is_400_with_code_501(http: httpx.Client, engine: Engine, api_code: str) -> None:
    for content, headers in [
        (b'{"url": ', JSON),
        (b'{"url": "https://192.88.99.1/", "events": "order.cancelled"}', JSON),  # a string, not a list
        (b"<WebhookRequest><url>x", XML),
    ]:
        response = http.post(WEBHOOKS, content=content, headers={"apiCode": api_code, **headers})
        assert response.status_code == 400, content
        assert b"501" in response.content
    missing = http.post(WEBHOOKS, json={"events": ["order.cancelled"]}, headers={"apiCode": api_code, **JSON})
    assert refusal(missing) == (400, 400, "Send the url of your webhook endpoint.")
    assert endpoint_rows(engine) == []


# Who may call -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given", [None, "", "not-a-guid", "unknown"], ids=["missing", "empty", "not-a-guid", "unknown-guid"]
)
def test_every_operation_refuses_a_missing_malformed_or_unknown_code_with_401_and_changes_nothing(
    http: httpx.Client, engine: Engine, api_code: str, given: str | None
) -> None:
    endpoint = created(http, api_code, PUBLIC_URL)
    headers = dict(JSON)
    if given is not None:
        headers["apiCode"] = str(uuid.uuid4()) if given == "unknown" else given
    for response in (
        http.post(WEBHOOKS, json={"url": PUBLIC_URL}, headers=headers),
        http.get(WEBHOOKS, headers=headers),
        http.delete(f"{WEBHOOKS}/{endpoint['id']}", headers=headers),
    ):
        assert refusal(response) == (401, 401, "Unauthorized")
    assert [row[0] for row in endpoint_rows(engine)] == [endpoint["id"]]


def test_a_revoked_code_is_refused_at_once_and_its_endpoints_are_sent_nothing_more(
    http: httpx.Client, engine: Engine, settings: Settings, api_code: str
) -> None:
    endpoint = created(http, api_code, PUBLIC_URL)
    assert [e["id"] for e in listed(http, api_code)] == [endpoint["id"]]  # authenticated a moment ago
    service.revoke_key(engine, settings.environment, api_code)
    headers = {"apiCode": api_code, **JSON}
    assert refusal(http.get(WEBHOOKS, headers=headers)) == (401, 401, "Unauthorized")
    assert refusal(http.delete(f"{WEBHOOKS}/{endpoint['id']}", headers=headers))[:2] == (401, 401)
    assert refusal(http.post(WEBHOOKS, json={"url": PUBLIC_URL}, headers=headers))[:2] == (401, 401)
    assert [row[0] for row in endpoint_rows(engine)] == [endpoint["id"]]
    # A code that leaked may have registered an endpoint of the attacker's: it hears nothing more.
    [shown] = outbox.list_endpoints(engine, operator=True)
    assert shown.disabled_at is not None and shown.disabled_reason == "API code revoked"
    with engine.begin() as connection:
        connection.execute(text("UPDATE orders SET status = 'Processing' WHERE status = 'Ordered'"))
    assert outbox.list_deliveries(engine) == []


# Tenants -------------------------------------------------------------------------------------------


def test_a_second_code_sees_none_of_the_first_codes_endpoints(
    http: httpx.Client, engine: Engine, settings: Settings, api_code: str
) -> None:
    other = service.create_key(engine, settings.environment, "other")
    mine = created(http, api_code, PUBLIC_URL)
    assert listed(http, other) == []
    theirs = created(http, other, PUBLIC_URL)
    assert [e["id"] for e in listed(http, api_code)] == [mine["id"]]
    assert [e["id"] for e in listed(http, other)] == [theirs["id"]]


def test_a_stranger_cannot_delete_another_codes_endpoint(
    http: httpx.Client, engine: Engine, settings: Settings, api_code: str
) -> None:
    other = service.create_key(engine, settings.environment, "other")
    mine = created(http, api_code, PUBLIC_URL)
    stranger = http.delete(f"{WEBHOOKS}/{mine['id']}", headers={"apiCode": other, **JSON})
    unknown = http.delete(f"{WEBHOOKS}/ep_0000000000000000", headers={"apiCode": other, **JSON})
    # Told apart from an id that exists nowhere by nothing: same status, same body.
    assert refusal(stranger) == refusal(unknown)
    assert refusal(stranger) == (404, 404, "No webhook endpoint with this id belongs to your apiCode.")
    assert [row[0] for row in endpoint_rows(engine)] == [mine["id"]]
    assert [e["id"] for e in listed(http, api_code)] == [mine["id"]]


def _deliveries_of(receiver: Receiver, path: str) -> list[Delivery]:
    return [d for d in receiver.received() if d.path == path]


def _wait_for(receiver: Receiver, path: str, event_type: str, order_number: str) -> Delivery:
    """The one delivery of this event to this path, waited for (bounded)."""

    def matches(delivery: Delivery) -> bool:
        event = delivery.event
        return delivery.path == path and event["type"] == event_type and event["data"]["orderNumber"] == order_number

    found = receiver.wait_for(1, timeout=10, predicate=matches)
    assert len(found) == 1, f"{path} got {[(d.path, d.event['type']) for d in receiver.received()]}"
    return found[0]


def test_an_endpoint_hears_only_of_its_own_codes_orders_and_an_operators_endpoint_of_all(
    private_http: httpx.Client,
    engine: Engine,
    settings: Settings,
    api_code: str,
    make_order: OrderFactory,
    receiver: Receiver,
) -> None:
    code_b = service.create_key(engine, settings.environment, "b")
    base = f"http://127.0.0.1:{receiver.port}"
    endpoint_a = created(private_http, api_code, f"{base}/a")
    endpoint_b = created(private_http, code_b, f"{base}/b")
    _, operator_secret = outbox.add_endpoint(engine, f"{base}/operator", api_key_id=None)  # `--all-keys`
    order_b = make_order(api_code=code_b)
    order_a = make_order()

    cancelled = private_http.post(
        BY_NUMBER, json={"orderNumber": order_b.order_number}, headers={"apiCode": code_b, **JSON}
    )
    assert cancelled.json()["isCanceled"] is True
    to_b = _wait_for(receiver, "/b", "order.cancelled", order_b.order_number)
    to_operator = _wait_for(receiver, "/operator", "order.cancelled", order_b.order_number)
    assert verify_webhook(to_b.body, to_b.headers, endpoint_b["secret"])["data"]["orderId"] == order_b.order_id
    assert verify_webhook(to_operator.body, to_operator.headers, operator_secret)["type"] == "order.cancelled"
    assert to_b.webhook_id == to_operator.webhook_id  # one event, told to each

    # And the other way round: A's order is told to A and to the operator, not to B.
    service.set_status(engine, order_a.order_id, "Processing")
    _wait_for(receiver, "/a", "order.status_changed", order_a.order_number)
    _wait_for(receiver, "/operator", "order.status_changed", order_a.order_number)

    # The trigger fanned each event out when it was written: A was never given B's, nor B A's.
    assert [d.event["data"]["orderNumber"] for d in _deliveries_of(receiver, "/a")] == [order_a.order_number]
    assert [d.event["data"]["orderNumber"] for d in _deliveries_of(receiver, "/b")] == [order_b.order_number]
    for endpoint, foreign in ((endpoint_a, order_b), (endpoint_b, order_a)):
        records = outbox.list_deliveries(engine, endpoint_id=endpoint["id"])
        assert foreign.order_number not in {record.order_number for record in records}
    with pytest.raises(InvalidSignature):  # A's secret signs nothing sent to B
        verify_webhook(to_b.body, to_b.headers, endpoint_a["secret"])


def test_the_engineers_name_reaches_an_operators_endpoint_but_not_the_integrators(
    private_http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory, receiver: Receiver
) -> None:
    base = f"http://127.0.0.1:{receiver.port}"
    created(private_http, api_code, f"{base}/integrator", [EventType.CLAIMED.value])
    outbox.add_endpoint(engine, f"{base}/operator", api_key_id=None, types=[EventType.CLAIMED.value])
    order = make_order()
    service.claim(engine, order.order_id, "Ada Lovelace")
    to_operator = _wait_for(receiver, "/operator", "order.claimed", order.order_number)
    to_integrator = _wait_for(receiver, "/integrator", "order.claimed", order.order_number)
    assert to_operator.event["data"]["engineer"] == "Ada Lovelace"
    assert "engineer" not in to_integrator.event["data"]
    assert b"Ada" not in to_integrator.body
    assert to_integrator.event["data"]["orderId"] == order.order_id


# Which URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://224.0.0.1/",
        "http://0.0.0.0/",
    ],
)
def test_a_url_that_reaches_a_non_public_address_is_refused_and_nothing_is_written(
    http: httpx.Client, server: LiveServer, engine: Engine, api_code: str, url: str
) -> None:
    assert server.settings.webhook_allow_private is False
    status, code, message = refusal(register(http, api_code, url))
    assert (status, code) == (400, 400)
    assert message == "the webhook URL's host does not resolve to public addresses only"
    assert endpoint_rows(engine) == []


def test_production_refuses_an_http_url_and_takes_https(settings: Settings, engine: Engine) -> None:
    production = dataclasses.replace(settings, environment=Environment.PRODUCTION, webhook_allow_private=True)
    code = service.create_key(engine, Environment.PRODUCTION, "live")
    with LiveServer(production) as live, httpx.Client(base_url=live.url, timeout=10) as client:
        status, error, message = refusal(register(client, code, "http://127.0.0.1:9/hook"))
        assert (status, error) == (400, 400)
        assert "must be https, not http" in message
        assert endpoint_rows(engine) == []
        # The scheme was the only reason: the same place over https is taken (private addresses allowed here).
        assert created(client, code, "https://127.0.0.1:9/hook")["url"] == "https://127.0.0.1:9/hook"


def test_a_url_with_a_user_name_and_password_is_refused(
    private_http: httpx.Client, engine: Engine, api_code: str, receiver: Receiver
) -> None:
    url = f"http://user:password@127.0.0.1:{receiver.port}/hook"
    status, code, message = refusal(register(private_http, api_code, url))
    assert (status, code) == (400, 400)
    assert "no user name or password" in message
    assert endpoint_rows(engine) == []


def test_a_body_over_64_kib_is_413_with_code_501_and_one_of_64_kib_is_read(
    http: httpx.Client, engine: Engine, api_code: str
) -> None:
    body = f'{{"url": "{PUBLIC_URL}"}}'.encode().ljust(64 * 1024 + 1)
    response = http.post(WEBHOOKS, content=body, headers={"apiCode": api_code, **JSON})
    assert response.status_code == 413
    assert response.json()["requestError"]["code"] == 501
    assert endpoint_rows(engine) == []
    exactly = http.post(WEBHOOKS, content=body[: 64 * 1024], headers={"apiCode": api_code, **JSON})
    assert exactly.status_code == 201
    assert len(endpoint_rows(engine)) == 1


def test_an_address_guessing_codes_on_the_webhook_endpoints_is_throttled(settings: Settings) -> None:
    with (
        LiveServer(dataclasses.replace(settings, auth_failures=3)) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        guesses = [client.get(WEBHOOKS, headers={"apiCode": str(uuid.uuid4()), **JSON}) for _ in range(5)]
    assert [r.status_code for r in guesses] == [401, 401, 401, 429, 429]
    assert int(guesses[-1].headers["retry-after"]) > 0
    assert guesses[-1].json()["requestError"]["code"] == 429


def test_a_codes_webhook_calls_count_against_its_rate_limit(settings: Settings, api_code: str) -> None:
    with (
        LiveServer(dataclasses.replace(settings, rate_limit="2/minute")) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        answers = [client.get(WEBHOOKS, headers={"apiCode": api_code, **JSON}) for _ in range(3)]
        refused = register(client, api_code, PUBLIC_URL)
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert "ratelimit-policy" in answers[0].headers and "retry-after" in answers[2].headers
    assert refused.status_code == 429


def test_a_host_that_does_not_resolve_gets_the_same_answer_as_one_that_resolves_inside(
    http: httpx.Client, engine: Engine, api_code: str
) -> None:
    inside = refusal(register(http, api_code, "http://127.0.0.1/hook"))
    nowhere = refusal(register(http, api_code, "https://no-such-host.invalid/hook"))
    assert inside == nowhere  # nothing to learn of the platform's own names
    assert endpoint_rows(engine) == []
