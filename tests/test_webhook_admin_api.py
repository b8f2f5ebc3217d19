"""The admin HTTP API's webhooks over the real server: every endpoint, their secrets, deliveries, replays."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel.client import verify_webhook
from ordercancel.config import Environment, Settings
from ordercancel.events import EventType
from ordercancel.storage import outbox, service
from ordercancel.storage.database import utcnow
from tests.support.live import ADMIN_TOKEN, LiveServer
from tests.support.orders import OrderFactory
from tests.support.receiver import Delivery, Receiver

ALL_EVENTS = [kind.value for kind in EventType]
#: A URL the default server (private addresses refused) takes without looking anything up.
PUBLIC_URL = "https://192.88.99.1/hook"
UNKNOWN_ENDPOINT = "ep_0000000000000000"
FIELDS = {"id", "url", "events", "apiKeyId", "createdAt", "disabledAt", "disabledReason"}


def endpoint_rows(engine: Engine) -> list[tuple[Any, ...]]:
    with engine.connect() as connection:
        query = text("SELECT endpoint_id, api_key_id, url FROM webhook_endpoints WHERE removed_at IS NULL ORDER BY id")
        return [tuple(row) for row in connection.execute(query)]


def key_id(engine: Engine, settings: Settings, code: str) -> int:
    with engine.connect() as connection:
        return service.active_key_id(connection, settings.environment, code)


def added(client: httpx.Client, **body: object) -> dict[str, Any]:
    response = client.post("/admin/webhooks", json=body)
    assert response.status_code == 201, response.text
    fields: dict[str, Any] = response.json()
    return fields


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as running:
        yield running


@pytest.fixture
def delivering_http(settings: Settings) -> Iterator[httpx.Client]:
    """The admin API of a server that sends webhooks, to loopback as tests alone allow, retrying fast."""
    sending = dataclasses.replace(
        settings,
        admin_token=ADMIN_TOKEN,
        webhook_allow_private=True,
        webhook_dispatcher=True,
        webhook_schedule=(0.1,),
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with LiveServer(sending) as live, httpx.Client(base_url=live.url, headers=headers, timeout=10) as client:
        yield client


def wait_for(receiver: Receiver, count: int) -> list[Delivery]:
    received = receiver.wait_for(count, timeout=10)
    assert len(received) == count, [d.event["type"] for d in received]
    return received


def settled(client: httpx.Client, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The deliveries, once none is pending (bounded): an attempt is recorded just after it returns."""
    deadline = time.monotonic() + timeout
    while True:
        records: list[dict[str, Any]] = client.get("/admin/webhooks/deliveries").json()["deliveries"]
        if all(record["state"] != "pending" for record in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.05)


# The token ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/admin/webhooks"),
        ("GET", "/admin/webhooks"),
        ("DELETE", "/admin/webhooks/{id}"),
        ("POST", "/admin/webhooks/{id}/rotate-secret"),
        ("GET", "/admin/webhooks/deliveries"),
        ("GET", "/admin/webhooks/{id}/deliveries"),
        ("POST", "/admin/events/evt_00000000000000000000000000000000/replay"),
    ],
)
def test_every_webhook_route_refuses_a_request_without_the_token_and_changes_nothing(
    admin_server: LiveServer, admin_http: httpx.Client, engine: Engine, method: str, path: str
) -> None:
    endpoint = added(admin_http, url=PUBLIC_URL, allKeys=True)
    url = admin_server.url + path.replace("{id}", endpoint["id"])
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}x"}):
        response = httpx.request(method, url, json={"url": PUBLIC_URL, "allKeys": True}, headers=headers)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json() == {"error": "a valid admin token is required"}
    assert [row[0] for row in endpoint_rows(engine)] == [endpoint["id"]]
    assert "whsec_" not in httpx.get(admin_server.url + "/admin/webhooks").text


def test_without_an_admin_token_the_webhook_routes_are_not_there(http: httpx.Client) -> None:
    for method, path in (("GET", "/admin/webhooks"), ("POST", "/admin/events/evt_1/replay")):
        assert http.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404


# Register ------------------------------------------------------------------------------------------


def test_an_endpoint_is_registered_for_one_api_code_with_its_secret_shown_once(
    admin_http: httpx.Client, engine: Engine, settings: Settings, api_code: str
) -> None:
    response = admin_http.post("/admin/webhooks", json={"url": PUBLIC_URL, "apiCode": api_code})
    assert response.status_code == 201
    assert response.headers["content-type"] == "application/json"
    endpoint = response.json()
    assert set(endpoint) == FIELDS | {"secret"}
    assert (endpoint["url"], endpoint["events"]) == (PUBLIC_URL, ALL_EVENTS)
    assert endpoint["apiKeyId"] == key_id(engine, settings, api_code)
    assert (endpoint["disabledAt"], endpoint["disabledReason"]) == (None, None)
    assert endpoint["secret"].startswith("whsec_")
    assert endpoint_rows(engine) == [(endpoint["id"], endpoint["apiKeyId"], PUBLIC_URL)]


def test_an_operators_endpoint_for_every_order_is_registered_with_all_keys(
    admin_http: httpx.Client, engine: Engine
) -> None:
    endpoint = added(admin_http, url=PUBLIC_URL, allKeys=True, events=["order.claimed", "order.released"])
    assert (endpoint["apiKeyId"], endpoint["events"]) == (None, ["order.claimed", "order.released"])
    assert endpoint_rows(engine) == [(endpoint["id"], None, PUBLIC_URL)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"url": PUBLIC_URL}, "send exactly one of apiCode"),
        ({"url": PUBLIC_URL, "allKeys": False}, "send exactly one of apiCode"),
        ({"url": PUBLIC_URL, "allKeys": True, "apiCode": "CODE"}, "send exactly one of apiCode"),
        ({"allKeys": True}, "url is required"),
        ({"url": PUBLIC_URL, "allKeys": "yes"}, "allKeys must be true or false"),
        ({"url": PUBLIC_URL, "allKeys": True, "events": "order.cancelled"}, "events must be a list of strings"),
        ({"url": PUBLIC_URL, "allKeys": True, "events": ["order.cancelled", 7]}, "events must be a list of strings"),
        ({"url": PUBLIC_URL, "allKeys": True, "events": ["order.shipped"]}, "unknown event type 'order.shipped'"),
        ({"url": PUBLIC_URL, "allKeys": True, "secret": "mine"}, "unknown field 'secret'"),
        ({"url": 7, "allKeys": True}, "url must be a string"),
        ({"url": PUBLIC_URL, "apiCode": "0f8fad5b-d9cb-469f-a165-70867728950e"}, "no active API code"),
        ({"url": "ftp://192.88.99.1/", "allKeys": True}, "must be https or http"),
        ({"url": "https://user:pw@192.88.99.1/", "allKeys": True}, "no user name or password"),
    ],
)
def test_a_registration_that_cannot_be_used_is_400_with_the_reason_and_writes_nothing(
    admin_http: httpx.Client, engine: Engine, api_code: str, body: dict[str, object], reason: str
) -> None:
    sent = {name: api_code if value == "CODE" else value for name, value in body.items()}
    response = admin_http.post("/admin/webhooks", json=sent)
    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert endpoint_rows(engine) == []


def test_a_body_that_is_not_a_json_object_is_400(admin_http: httpx.Client, engine: Engine) -> None:
    for content in (b"{", b"[]", b'"url"'):
        response = admin_http.post("/admin/webhooks", content=content)
        assert response.status_code == 400
        assert set(response.json()) == {"error"}
    assert endpoint_rows(engine) == []


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1/", "http://localhost/", "http://10.0.0.1/", "http://169.254.169.254/", "http://[::1]/"]
)
def test_a_url_that_reaches_a_non_public_address_is_refused(
    admin_server: LiveServer, admin_http: httpx.Client, engine: Engine, url: str
) -> None:
    assert admin_server.settings.webhook_allow_private is False
    response = admin_http.post("/admin/webhooks", json={"url": url, "allKeys": True})
    assert response.status_code == 400
    assert "does not resolve to public addresses only" in response.json()["error"]
    assert endpoint_rows(engine) == []


def test_production_takes_https_urls_only(settings: Settings, engine: Engine) -> None:
    production = dataclasses.replace(settings, environment=Environment.PRODUCTION, admin_token=ADMIN_TOKEN)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with LiveServer(production) as live, httpx.Client(base_url=live.url, headers=headers, timeout=10) as client:
        response = client.post("/admin/webhooks", json={"url": "http://192.88.99.1/", "allKeys": True})
        assert response.status_code == 400
        assert "must be https, not http" in response.json()["error"]
        assert endpoint_rows(engine) == []
        assert added(client, url=PUBLIC_URL, allKeys=True)["url"] == PUBLIC_URL


# List, remove --------------------------------------------------------------------------------------


def test_the_list_holds_every_endpoint_an_integrators_and_an_operators_and_no_secret(
    admin_server: LiveServer, admin_http: httpx.Client, engine: Engine, settings: Settings, api_code: str
) -> None:
    operator = added(admin_http, url=PUBLIC_URL, allKeys=True)
    theirs = httpx.post(  # one an integrator registered itself
        f"{admin_server.url}/web-api/webhooks",
        json={"url": PUBLIC_URL, "events": ["order.cancelled"]},
        headers={"apiCode": api_code, "Accept": "application/json"},
    ).json()
    response = admin_http.get("/admin/webhooks")
    assert response.status_code == 200
    webhooks = response.json()["webhooks"]
    assert [w["id"] for w in webhooks] == [operator["id"], theirs["id"]]
    assert all(set(w) == FIELDS for w in webhooks)
    assert [w["apiKeyId"] for w in webhooks] == [None, key_id(engine, settings, api_code)]
    assert webhooks[1]["events"] == ["order.cancelled"]
    for secret in (operator["secret"], theirs["secret"]):
        assert secret not in response.text
    assert "whsec_" not in response.text


def test_an_endpoint_is_removed_with_its_deliveries_and_an_unknown_one_is_404(
    admin_http: httpx.Client, engine: Engine, make_order: OrderFactory
) -> None:
    gone = added(admin_http, url=PUBLIC_URL, allKeys=True)
    kept = added(admin_http, url=PUBLIC_URL, allKeys=True)
    service.set_status(engine, make_order().order_id, "Processing")  # a pending delivery to each
    response = admin_http.delete(f"/admin/webhooks/{gone['id']}")
    assert (response.status_code, response.content) == (204, b"")
    assert [row[0] for row in endpoint_rows(engine)] == [kept["id"]]
    assert [d.endpoint_id for d in outbox.list_deliveries(engine)] == [kept["id"]]
    again = admin_http.delete(f"/admin/webhooks/{gone['id']}")
    assert again.status_code == 404
    assert again.json() == {"error": f"no webhook endpoint {gone['id']!r}"}


def test_the_deliveries_path_is_not_taken_for_an_endpoint_id(admin_http: httpx.Client, engine: Engine) -> None:
    added(admin_http, url=PUBLIC_URL, allKeys=True)
    assert admin_http.delete("/admin/webhooks/deliveries").status_code == 405  # the exact path, GET only
    assert admin_http.get("/admin/webhooks/deliveries").json() == {"deliveries": []}
    assert len(endpoint_rows(engine)) == 1


# Rotate ---------------------------------------------------------------------------------------------


def test_rotate_secret_answers_the_endpoint_and_its_new_secret_and_both_sign_for_a_day(
    admin_http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    before = added(admin_http, url=PUBLIC_URL, apiCode=api_code)
    response = admin_http.post(f"/admin/webhooks/{before['id']}/rotate-secret")
    assert response.status_code == 200
    rotated = response.json()
    assert set(rotated) == FIELDS | {"secret", "previousSecretUntil"}
    assert {k: rotated[k] for k in FIELDS} == {k: before[k] for k in FIELDS}
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != before["secret"]
    until = datetime.fromisoformat(rotated["previousSecretUntil"])
    assert timedelta(hours=23) < until - utcnow() <= timedelta(hours=24)

    service.set_status(engine, make_order().order_id, "Processing")
    [due] = outbox.settle_and_claim(engine, [], now=utcnow(), lease=timedelta(seconds=30), limit=10)
    assert due.secrets == (rotated["secret"], before["secret"])
    assert "whsec_" not in admin_http.get("/admin/webhooks").text

    unknown = admin_http.post(f"/admin/webhooks/{UNKNOWN_ENDPOINT}/rotate-secret")
    assert unknown.status_code == 404
    assert admin_http.post(f"/admin/webhooks/{before['id']}/rotate-secret", json={"secret": "x"}).status_code == 400


# Deliveries and replays ------------------------------------------------------------------------------


def test_the_deliveries_show_each_attempt_with_its_status_for_all_or_one_endpoint(
    delivering_http: httpx.Client, engine: Engine, make_order: OrderFactory
) -> None:
    answers = iter([500, 204])
    with Receiver(lambda delivery: next(answers, 204)) as receiver:
        endpoint = added(delivering_http, url=receiver.url, allKeys=True, events=["order.claimed"])
        quiet = added(delivering_http, url=receiver.url, allKeys=True, events=["order.released"])
        order = make_order()
        service.claim(engine, order.order_id, "Ada")
        first, second = wait_for(receiver, 2)
        assert first.webhook_id == second.webhook_id
        assert verify_webhook(second.body, second.headers, endpoint["secret"])["data"]["engineer"] == "Ada"
        records = settled(delivering_http)
    assert len(records) == 1
    [record] = records
    assert set(record) == {"id", "eventId", "type", "orderNumber", "endpointId", "state", "nextAttemptAt", "attempts"}
    assert (record["eventId"], record["type"], record["orderNumber"]) == (
        first.webhook_id,
        "order.claimed",
        order.order_number,
    )
    assert (record["endpointId"], record["state"], record["nextAttemptAt"]) == (endpoint["id"], "delivered", None)
    assert [(a["status"], a["error"]) for a in record["attempts"]] == [(500, "answered HTTP 500"), (204, None)]
    assert delivering_http.get(f"/admin/webhooks/{endpoint['id']}/deliveries").json() == {"deliveries": records}
    assert delivering_http.get(f"/admin/webhooks/{quiet['id']}/deliveries").json() == {"deliveries": []}
    unknown = delivering_http.get(f"/admin/webhooks/{UNKNOWN_ENDPOINT}/deliveries")
    assert (unknown.status_code, unknown.json()) == (404, {"error": f"no webhook endpoint {UNKNOWN_ENDPOINT!r}"})


def test_the_deliveries_take_a_limit_of_the_newest(
    admin_http: httpx.Client, engine: Engine, make_order: OrderFactory
) -> None:
    added(admin_http, url=PUBLIC_URL, allKeys=True)
    order = make_order()
    service.set_status(engine, order.order_id, "Processing")
    service.claim(engine, order.order_id, "Ada")
    every = admin_http.get("/admin/webhooks/deliveries").json()["deliveries"]
    assert [d["type"] for d in every] == ["order.status_changed", "order.claimed"]
    assert admin_http.get("/admin/webhooks/deliveries?limit=1").json()["deliveries"] == every[1:]
    for limit in ("0", "abc", "1001", "9" * 5000, ""):
        response = admin_http.get(f"/admin/webhooks/deliveries?limit={limit}")
        assert response.status_code == 400
        assert response.json() == {"error": "limit is a whole number from 1 to 1000"}


def test_a_replay_sends_the_event_again_with_its_own_id_to_every_endpoint_or_one(
    delivering_http: httpx.Client, engine: Engine, api_code: str, make_order: OrderFactory, receiver: Receiver
) -> None:
    mine = added(delivering_http, url=receiver.url, apiCode=api_code, events=["order.status_changed"])
    operator = added(delivering_http, url=receiver.url, allKeys=True, events=["order.status_changed"])
    service.set_status(engine, make_order().order_id, "Processing")
    event_id = wait_for(receiver, 2)[0].webhook_id

    response = delivering_http.post(f"/admin/events/{event_id}/replay")
    assert (response.status_code, response.json()) == (200, {"deliveries": 2})
    assert [d.webhook_id for d in wait_for(receiver, 4)] == [event_id] * 4
    one = delivering_http.post(f"/admin/events/{event_id}/replay", json={"endpoint": mine["id"]})
    assert (one.status_code, one.json()) == (200, {"deliveries": 1})
    fifth = wait_for(receiver, 5)[4]
    assert fifth.webhook_id == event_id
    assert verify_webhook(fifth.body, fifth.headers, mine["secret"])  # signed for the endpoint named
    endpoints = [d.endpoint_id for d in outbox.list_deliveries(engine)]
    assert sorted(endpoints) == sorted([mine["id"]] * 3 + [operator["id"]] * 2)


def test_a_replay_is_refused_for_an_unknown_event_or_endpoint_or_one_that_may_not_hear_of_it(
    admin_http: httpx.Client, engine: Engine, settings: Settings, api_code: str, make_order: OrderFactory
) -> None:
    other = service.create_key(engine, settings.environment, "other")
    added(admin_http, url=PUBLIC_URL, apiCode=api_code)
    theirs = added(admin_http, url=PUBLIC_URL, apiCode=other)
    service.set_status(engine, make_order().order_id, "Processing")
    [record] = outbox.list_deliveries(engine)
    path = f"/admin/events/{record.event_id}/replay"
    cases = [
        ("/admin/events/evt_00000000000000000000000000000000/replay", None, 404, "no event"),
        (path, {"endpoint": UNKNOWN_ENDPOINT}, 404, "no webhook endpoint"),
        (path, {"endpoint": theirs["id"]}, 404, "may not hear of event"),
        (path, {"endpoint": 7}, 400, "endpoint must be a string"),
        (path, {"endpoints": theirs["id"]}, 400, "unknown field 'endpoints'"),
    ]
    for where, body, status, reason in cases:
        response = admin_http.post(where, json=body) if body is not None else admin_http.post(where)
        assert response.status_code == status, (where, body)
        assert reason in response.json()["error"]
    assert len(outbox.list_deliveries(engine)) == 1
