"""The dispatcher: signed deliveries, retries, 410, redirects, rotation, replay, leases, SSRF at connect time."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, update
from standardwebhooks.webhooks import Webhook

from ordercancel.client import verify_webhook
from ordercancel.client._version import __version__
from ordercancel.config import Settings
from ordercancel.delivery import guarded_transport
from ordercancel.storage import outbox, service
from ordercancel.storage.database import utcnow
from ordercancel.storage.schema import webhook_endpoints, webhook_events
from tests.support.dispatching import DispatcherThread, states, wait_until
from tests.support.live import LiveServer
from tests.support.orders import OrderFactory
from tests.support.receiver import Delivery, Receiver
from tests.support.serving import free_port


@pytest.fixture
def key_id(engine: Engine, settings: Settings, api_code: str) -> int:
    with engine.connect() as connection:
        return service.active_key_id(connection, settings.environment, api_code)


def change(engine: Engine, make_order: OrderFactory, number: str) -> None:
    """Make an order and one event of it (Ordered to Processing)."""
    make_order(number=number)
    service.set_status(engine, number, "Processing")


def test_a_delivery_is_signed_as_the_standard_says_and_carries_the_event(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver() as receiver, DispatcherThread(engine, allow_private=True):
        endpoint, secret = outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        change(engine, make_order, "WH-1")
        [delivery] = receiver.wait_for(1)
    with engine.connect() as connection:
        event_id = connection.scalar(select(webhook_events.c.event_id))
    assert delivery.webhook_id == event_id
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["user-agent"] == f"ordercancel/{__version__}"
    assert abs(int(delivery.headers["webhook-timestamp"]) - time.time()) < 60
    verified = Webhook(secret).verify(delivery.body, delivery.headers)
    assert verified == verify_webhook(delivery.body, delivery.headers, secret) == delivery.event
    assert verified["type"] == "order.status_changed"
    data = verified["data"]
    assert (data["orderNumber"], data["environment"], data["sequence"]) == ("WH-1", "sandbox", 1)
    assert data["from"] == {"status": "Ordered", "paymentStatus": "PaymentOK"}
    assert data["to"] == {"status": "Processing", "paymentStatus": "PaymentOK"}
    assert verified["timestamp"].endswith("Z")
    assert states(engine) == {"delivered": 1}
    [record] = outbox.list_deliveries(engine, endpoint_id=endpoint.endpoint_id)
    assert [(a.status, a.error) for a in record.attempts] == [(204, None)]


def test_a_failing_endpoint_is_retried_on_the_schedule_then_the_delivery_fails(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver(lambda d: 500) as receiver:
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        with DispatcherThread(engine, allow_private=True, schedule=(0.3, 0.6)) as dispatcher:
            change(engine, make_order, "WH-2")
            deliveries = receiver.wait_for(3)
            wait_until(lambda: states(engine) == {"failed": 1}, what="the delivery failing")
            time.sleep(0.5)  # no fourth attempt comes
            assert len(receiver.received()) == 3
    assert len({d.webhook_id for d in deliveries}) == 1  # the same id on every retry
    gaps = [after.at - before.at for before, after in pairwise(deliveries)]
    # Never sooner than the schedule (less its jitter); later only by what a loaded machine adds.
    assert 0.3 * 0.9 - 0.05 <= gaps[0] < 0.3 * 1.1 + 2 and 0.6 * 0.9 - 0.05 <= gaps[1] < 0.6 * 1.1 + 2, gaps
    [record] = outbox.list_deliveries(engine)
    assert [(a.status, a.error) for a in record.attempts] == [(500, "answered HTTP 500")] * 3
    assert record.state == "failed"
    assert dispatcher is not None


def test_no_answer_in_time_and_a_refused_connection_are_recorded_and_retried(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    def slow(delivery: Delivery) -> int:
        time.sleep(1.5)
        return 204

    with Receiver(slow) as receiver:
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        outbox.add_endpoint(engine, f"http://127.0.0.1:{free_port()}/hook", api_key_id=key_id)  # nothing listens
        with DispatcherThread(engine, allow_private=True, timeout=0.5, schedule=(60.0,)):
            change(engine, make_order, "WH-3")
            wait_until(lambda: len([a for d in outbox.list_deliveries(engine) for a in d.attempts]) == 2)
    errors = sorted(str(d.attempts[0].error) for d in outbox.list_deliveries(engine))
    assert errors[0].startswith("ConnectError") and errors[1] == "no answer within 0.5 s", errors
    assert states(engine) == {"pending": 2}  # each waits for its retry


def test_410_gone_disables_the_endpoint_and_fails_what_it_still_had_pending(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver(lambda d: 410) as receiver:
        endpoint = outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)[0]
        for number in ("WH-4", "WH-5", "WH-6"):
            change(engine, make_order, number)
        with DispatcherThread(engine, allow_private=True, concurrency=1):
            wait_until(lambda: states(engine) == {"failed": 3}, what="every delivery failing")
        assert len(receiver.received()) == 1  # the first answer was enough
        [shown] = outbox.list_endpoints(engine, operator=True)
        assert shown.disabled_at is not None and shown.disabled_reason == "answered 410 Gone"
        change(engine, make_order, "WH-7")
        assert states(engine) == {"failed": 3}  # a disabled endpoint is not given new deliveries
        assert endpoint.endpoint_id == shown.endpoint_id


def test_a_redirect_is_not_followed_it_is_a_failed_attempt(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver(lambda d: 302 if d.path == "/hook" else 204) as receiver:
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        with DispatcherThread(engine, allow_private=True, schedule=(60.0,)):
            change(engine, make_order, "WH-8")
            wait_until(lambda: any(d.attempts for d in outbox.list_deliveries(engine)))
        assert [d.path for d in receiver.received()] == ["/hook"]
    [record] = outbox.list_deliveries(engine)
    assert (record.state, record.attempts[0].status) == ("pending", 302)


def test_a_name_that_resolves_to_a_private_address_is_refused_where_the_connection_is_made(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]  # registered when it was public; the name now points inside

    with Receiver() as receiver:
        outbox.add_endpoint(engine, f"http://hooks.example:{receiver.port}/hook", api_key_id=key_id)
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)  # a literal loopback address
        transport = guarded_transport(allow_private=False, resolver=rebinding)
        with DispatcherThread(engine, transport=transport, schedule=(60.0,)):
            change(engine, make_order, "WH-9")
            wait_until(lambda: all(d.attempts for d in outbox.list_deliveries(engine)) and states(engine) != {})
        assert receiver.received() == []
    errors = [d.attempts[0].error or "" for d in outbox.list_deliveries(engine)]
    assert len(errors) == 2 and all("not a public address" in error for error in errors), errors


def test_after_a_rotation_both_secrets_sign_for_a_day_then_only_the_new_one(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver() as receiver:
        endpoint, old = outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        _, new = outbox.rotate_secret(engine, endpoint.endpoint_id)
        with DispatcherThread(engine, allow_private=True):
            change(engine, make_order, "WH-10")
            [during] = receiver.wait_for(1)
        a_day_later = lambda: utcnow() + timedelta(hours=24, seconds=1)  # noqa: E731
        with DispatcherThread(engine, allow_private=True, clock=a_day_later):
            change(engine, make_order, "WH-11")
            after = receiver.wait_for(2)[1]
    assert len(during.headers["webhook-signature"].split()) == 2
    for secret in (old, new):
        Webhook(secret).verify(during.body, during.headers)
    assert len(after.headers["webhook-signature"].split()) == 1
    Webhook(new).verify(after.body, after.headers)
    with pytest.raises(Exception, match="signature"):
        Webhook(old).verify(after.body, after.headers)


def test_a_replay_sends_the_event_again_with_its_own_webhook_id_and_body(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver() as receiver:
        endpoint = outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)[0]
        with DispatcherThread(engine, allow_private=True):
            change(engine, make_order, "WH-12")
            [first] = receiver.wait_for(1)
            assert outbox.replay(engine, first.webhook_id) == 1
            assert outbox.replay(engine, first.webhook_id, endpoint_id=endpoint.endpoint_id) == 1
            again = receiver.wait_for(3)
    assert {d.webhook_id for d in again} == {first.webhook_id}
    assert {d.body for d in again} == {first.body}
    assert states(engine) == {"delivered": 3}


def test_a_replay_to_an_endpoint_of_another_code_is_refused(
    engine: Engine, settings: Settings, make_order: OrderFactory, key_id: int
) -> None:
    other = service.create_key(engine, settings.environment, "other")
    with engine.connect() as connection:
        other_id = service.active_key_id(connection, settings.environment, other)
    mine = outbox.add_endpoint(engine, "http://127.0.0.1:9/mine", api_key_id=key_id)[0]
    theirs = outbox.add_endpoint(engine, "http://127.0.0.1:9/theirs", api_key_id=other_id)[0]
    change(engine, make_order, "WH-13")
    with engine.connect() as connection:
        event_id = str(connection.scalar(select(webhook_events.c.event_id)))
    with pytest.raises(outbox.EventNotFound):
        outbox.replay(engine, event_id, endpoint_id=theirs.endpoint_id)
    assert outbox.replay(engine, event_id, endpoint_id=mine.endpoint_id) == 1
    with pytest.raises(outbox.EventNotFound):
        outbox.replay(engine, "evt_nothing")


def test_two_dispatchers_over_one_database_never_send_one_delivery_twice(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    numbers = [f"WH-L{i}" for i in range(120)]

    def unhurried(delivery: Delivery) -> int:
        time.sleep(0.01)  # so that neither dispatcher is done before the other has started
        return 204

    with Receiver(unhurried) as receiver:
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        for number in numbers:
            change(engine, make_order, number)
        with (
            DispatcherThread(engine, allow_private=True, concurrency=4) as first,
            DispatcherThread(engine, allow_private=True, concurrency=4) as second,
        ):
            receiver.wait_for(len(numbers), timeout=60)
            wait_until(lambda: states(engine) == {"delivered": len(numbers)}, timeout=30)
        ids = [d.webhook_id for d in receiver.received()]
    assert len(ids) == len(set(ids)) == len(numbers)
    assert first.sent + second.sent == len(numbers) and first.sent > 0 and second.sent > 0


def test_operators_see_engineers_names_and_integrators_do_not(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver() as receiver:
        outbox.add_endpoint(engine, receiver.url.replace("/hook", "/mine"), api_key_id=key_id)
        outbox.add_endpoint(engine, receiver.url.replace("/hook", "/ops"), api_key_id=None)
        make_order(number="WH-14")
        with DispatcherThread(engine, allow_private=True):
            service.claim(engine, "WH-14", "Grace Hopper")
            service.release(engine, "WH-14")
            service.set_status(engine, "WH-14", "Cancelled", operator="Ada")
            received = receiver.wait_for(6)
    seen: dict[str, list[dict[str, Any]]] = {}
    for delivery in sorted(received, key=lambda d: d.event["data"]["sequence"]):
        seen.setdefault(delivery.path, []).append(delivery.event)
    assert [e["type"] for e in seen["/ops"]] == ["order.claimed", "order.released", "order.cancelled"]
    assert [e["data"].get("engineer") for e in seen["/ops"][:2]] == ["Grace Hopper", "Grace Hopper"]
    assert seen["/ops"][2]["data"]["cancelledBy"] == {"kind": "operator", "name": "Ada"}
    assert [e["type"] for e in seen["/mine"]] == ["order.claimed", "order.released", "order.cancelled"]
    assert all("engineer" not in e["data"] for e in seen["/mine"])
    assert "Grace Hopper" not in str(seen["/mine"]) and "Ada" not in str(seen["/mine"])
    assert seen["/mine"][2]["data"]["cancelledBy"] == {"kind": "operator"}


def test_metrics_count_attempts_by_outcome_and_show_the_backlog_and_its_age(
    settings: Settings, engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    served = dataclasses.replace(
        settings, webhook_dispatcher=True, webhook_allow_private=True, webhook_schedule=(60.0,)
    )
    with (
        Receiver(lambda d: 500 if d.event["data"]["orderNumber"] == "WH-M2" else 204) as receiver,
        LiveServer(served) as live,
        httpx.Client(base_url=live.url, timeout=10) as client,
    ):
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        change(engine, make_order, "WH-M1")
        change(engine, make_order, "WH-M2")
        wait_until(lambda: all(d.attempts for d in outbox.list_deliveries(engine)) and len(receiver.received()) == 2)
        time.sleep(0.2)
        exposition = client.get("/metrics").text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in exposition.splitlines()
        if line.startswith("ordercancel_webhook")
    }
    assert samples['ordercancel_webhook_deliveries_total{outcome="delivered"}'] == 1
    assert samples['ordercancel_webhook_deliveries_total{outcome="retried"}'] == 1
    assert samples["ordercancel_webhook_backlog"] == 1  # the one waiting for its retry
    assert samples["ordercancel_webhook_oldest_undelivered_age_seconds"] > 0


def test_a_delivery_made_for_an_endpoint_as_it_was_removed_is_failed_never_sent(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    with Receiver() as receiver:
        endpoint = outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)[0]
        change(engine, make_order, "WH-R1")  # a pending delivery, as a change racing the removal made it
        with engine.begin() as connection:  # the removal, as if it committed just before that change did
            connection.execute(
                update(webhook_endpoints)
                .where(webhook_endpoints.c.endpoint_id == endpoint.endpoint_id)
                .values(removed_at=utcnow(), disabled_at=utcnow(), disabled_reason="removed")
            )
        with DispatcherThread(engine, allow_private=True):
            wait_until(lambda: states(engine) == {"failed": 1}, what="the delivery failing")
        assert receiver.received() == []
    assert outbox.list_endpoints(engine, operator=True) == []


def test_a_late_result_does_not_settle_a_delivery_another_dispatcher_has_claimed_since(
    engine: Engine, make_order: OrderFactory, key_id: int
) -> None:
    outbox.add_endpoint(engine, "http://127.0.0.1:9/hook", api_key_id=key_id)
    change(engine, make_order, "WH-R2")
    lease = timedelta(seconds=10)
    [first] = outbox.settle_and_claim(engine, [], now=utcnow(), lease=lease, limit=1)
    later = utcnow() + timedelta(seconds=11)  # the first dispatcher's lease ran out: another claims it
    [second] = outbox.settle_and_claim(engine, [], now=later, lease=lease, limit=1)
    assert second.delivery_id == first.delivery_id and second.lease_until > first.lease_until

    def result(due: outbox.Due, status: int | None, retry_at: Any) -> outbox.Result:
        return outbox.Result(due.delivery_id, later, status, 5, None, retry_at, status == 204, due.lease_until)

    outbox.settle_and_claim(engine, [result(first, None, None)], now=later, lease=lease, limit=0)  # "failed"
    assert states(engine) == {"pending": 1}  # the newer claim holds: the late failure changes nothing
    outbox.settle_and_claim(engine, [result(second, 204, None)], now=later, lease=lease, limit=0)
    assert states(engine) == {"delivered": 1}
    [record] = outbox.list_deliveries(engine)
    assert [a.status for a in record.attempts] == [None, 204]  # both attempts are on the record
