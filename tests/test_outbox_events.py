"""The outbox: every change of an order writes its event, in the change's own transaction, and nothing else does."""

from __future__ import annotations

import threading
from itertools import pairwise
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select, text, update

from ordercancel.config import Settings
from ordercancel.events import EVENT_BITS, EventType
from ordercancel.storage import outbox, service
from ordercancel.storage.schema import orders, webhook_deliveries, webhook_endpoints, webhook_events
from tests.support.orders import OrderFactory

BY_NUMBER = "/web-api/order/CancelOrderByNumber"


def events_of(engine: Engine, number: str) -> list[Any]:
    with engine.connect() as connection:
        return list(
            connection.execute(
                select(webhook_events)
                .join(orders, orders.c.id == webhook_events.c.order_ref)
                .where(orders.c.order_number == number)
                .order_by(webhook_events.c.sequence)
            )
        )


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table)) or 0)


def cancel(http: httpx.Client, api_code: str, number: str) -> dict[str, Any]:
    headers = {"apiCode": api_code, "Content-Type": "application/json", "Accept": "application/json"}
    answer: dict[str, Any] = http.post(BY_NUMBER, headers=headers, json={"orderNumber": number}).json()
    return answer


def test_each_change_of_an_order_writes_one_event_of_its_type_with_what_moved(
    engine: Engine, make_order: OrderFactory, http: httpx.Client, api_code: str
) -> None:
    make_order(number="EV-1", payment_status="PaymentPending")
    service.set_payment(engine, "EV-1", "PaymentOK")
    service.claim(engine, "EV-1", "Grace Hopper")
    service.release(engine, "EV-1")
    service.set_status(engine, "EV-1", "Processing")
    assert cancel(http, api_code, "EV-1")["isCanceled"] is True

    events = events_of(engine, "EV-1")
    assert [(e.sequence, e.type) for e in events] == [
        (1, EventType.STATUS_CHANGED),
        (2, EventType.CLAIMED),
        (3, EventType.RELEASED),
        (4, EventType.STATUS_CHANGED),
        (5, EventType.CANCELLED),
    ]
    moved = [(e.from_status, e.from_payment, e.status, e.payment_status) for e in events]
    assert moved[0] == ("Ordered", "PaymentPending", "Ordered", "PaymentOK")
    assert moved[3] == ("Ordered", "PaymentOK", "Processing", "PaymentOK")
    assert moved[4] == ("Processing", "PaymentOK", "Cancelled", "PaymentOK")
    assert [e.engineer for e in events] == [None, "Grace Hopper", "Grace Hopper", None, None]
    assert events[4].cancelled_by_key is not None and events[4].cancelled_at is not None
    assert len({e.event_id for e in events}) == 5 and all(e.event_id.startswith("evt_") for e in events)


def test_an_operators_cancellation_is_one_order_cancelled_event_with_the_operator_and_the_reason(
    engine: Engine, make_order: OrderFactory
) -> None:
    make_order(number="EV-2")
    service.set_status(engine, "EV-2", "Cancelled", operator="Ada", reason="DuplicateOrder", note="twice")
    [event] = events_of(engine, "EV-2")
    assert (event.type, event.cancelled_by_operator, event.cancellation_reason, event.cancellation_note) == (
        EventType.CANCELLED,
        "Ada",
        "DuplicateOrder",
        "twice",
    )


def test_a_refused_change_and_a_new_order_write_no_event(
    engine: Engine, make_order: OrderFactory, http: httpx.Client, api_code: str
) -> None:
    make_order(number="EV-3", status="Cancelled")
    make_order(number="EV-4", status="InProduction")
    make_order(number="EV-5", engineer="Linus")
    assert cancel(http, api_code, "EV-3")["requestError"]["code"] == 507
    assert cancel(http, api_code, "EV-4")["requestError"]["code"] == 508
    assert cancel(http, api_code, "EV-5")["requestError"]["code"] == 509
    with pytest.raises(service.TransitionRefused):
        service.claim(engine, "EV-5", "Someone Else")
    with pytest.raises(service.TransitionRefused):
        service.set_status(engine, "EV-4", "Ordered")
    assert count(engine, webhook_events) == 0


def test_a_change_that_rolls_back_leaves_no_event_and_no_delivery(engine: Engine, make_order: OrderFactory) -> None:
    make_order(number="EV-6")
    outbox.add_endpoint(engine, "https://hooks.example/all", api_key_id=None)
    connection = engine.connect()
    transaction = connection.begin()
    connection.execute(update(orders).where(orders.c.order_number == "EV-6").values(status="Processing"))
    assert connection.scalar(select(func.count()).select_from(webhook_events)) == 1  # written with the change
    transaction.rollback()
    connection.close()
    assert count(engine, webhook_events) == 0 and count(engine, webhook_deliveries) == 0
    assert service.find_order(engine, "EV-6").status.value == "Ordered"


def _refuse_events(engine: Engine) -> None:
    """Make every insert of an event fail, as a full disk or a broken table would."""
    with engine.begin() as connection:
        if engine.dialect.name == "sqlite":
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_events BEFORE INSERT ON webhook_events "
                    "BEGIN SELECT RAISE(ABORT, 'no events today'); END"
                )
            )
        else:
            connection.execute(
                text(
                    "CREATE FUNCTION refuse_events() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'no events today'; END $$"
                )
            )
            connection.execute(
                text(
                    "CREATE TRIGGER refuse_events BEFORE INSERT ON webhook_events "
                    "FOR EACH ROW EXECUTE FUNCTION refuse_events()"
                )
            )


def test_a_change_whose_event_cannot_be_written_does_not_commit_on_any_path(
    engine: Engine, make_order: OrderFactory, http: httpx.Client, api_code: str
) -> None:
    make_order(number="EV-7")
    _refuse_events(engine)
    with pytest.raises(Exception, match="no events today"):
        service.set_status(engine, "EV-7", "Processing")
    with pytest.raises(Exception, match="no events today"):
        service.claim(engine, "EV-7", "Grace Hopper")
    answer = http.post(
        BY_NUMBER,
        headers={"apiCode": api_code, "Content-Type": "application/json", "Accept": "application/json"},
        json={"orderNumber": "EV-7"},
    )
    assert answer.status_code == 500
    order = service.find_order(engine, "EV-7")
    assert (order.status.value, order.engineer) == ("Ordered", None)


def test_an_endpoint_gets_deliveries_of_the_event_types_it_asked_for_only(
    engine: Engine, make_order: OrderFactory, http: httpx.Client, api_code: str
) -> None:
    endpoints = {
        kind: outbox.add_endpoint(engine, f"https://hooks.example/{kind.value}", api_key_id=None, types=[kind])[0]
        for kind in EventType
    }
    everything = outbox.add_endpoint(engine, "https://hooks.example/all", api_key_id=None)[0]
    make_order(number="EV-8", payment_status="PaymentPending")
    service.set_payment(engine, "EV-8", "PaymentOK")
    service.claim(engine, "EV-8", "Grace Hopper")
    service.release(engine, "EV-8")
    assert cancel(http, api_code, "EV-8")["isCanceled"] is True

    with engine.connect() as connection:
        rows = connection.execute(
            select(webhook_endpoints.c.endpoint_id, webhook_events.c.type)
            .select_from(webhook_deliveries)
            .join(webhook_events, webhook_events.c.id == webhook_deliveries.c.event_ref)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_ref)
        ).all()
    heard: dict[str, list[str]] = {}
    for endpoint_id, kind in rows:
        heard.setdefault(endpoint_id, []).append(kind)
    for kind, endpoint in endpoints.items():
        assert heard[endpoint.endpoint_id] == [kind.value], kind  # the trigger's bits are EVENT_BITS
    assert sorted(heard[everything.endpoint_id]) == sorted(kind.value for kind in EVENT_BITS)


def test_an_event_is_delivered_to_its_own_codes_endpoints_and_operators_only(
    engine: Engine, settings: Settings, make_order: OrderFactory, http: httpx.Client, api_code: str
) -> None:
    other_code = service.create_key(engine, settings.environment, "other")
    with engine.connect() as connection:
        mine = service.active_key_id(connection, settings.environment, api_code)
        theirs = service.active_key_id(connection, settings.environment, other_code)
    own = outbox.add_endpoint(engine, "https://hooks.example/mine", api_key_id=mine)[0]
    stranger = outbox.add_endpoint(engine, "https://hooks.example/theirs", api_key_id=theirs)[0]
    operator = outbox.add_endpoint(engine, "https://hooks.example/ops", api_key_id=None)[0]
    make_order(number="EV-9")
    make_order(number="EV-10", api_code=other_code)
    assert cancel(http, api_code, "EV-9")["isCanceled"] is True
    service.set_status(engine, "EV-10", "Processing")

    with engine.connect() as connection:
        rows = connection.execute(
            select(orders.c.order_number, webhook_endpoints.c.endpoint_id)
            .select_from(webhook_deliveries)
            .join(webhook_events, webhook_events.c.id == webhook_deliveries.c.event_ref)
            .join(orders, orders.c.id == webhook_events.c.order_ref)
            .join(webhook_endpoints, webhook_endpoints.c.id == webhook_deliveries.c.endpoint_ref)
        ).all()
    assert sorted(rows) == sorted(
        [
            ("EV-9", own.endpoint_id),
            ("EV-9", operator.endpoint_id),
            ("EV-10", stranger.endpoint_id),
            ("EV-10", operator.endpoint_id),
        ]
    )


def test_a_disabled_endpoint_gets_no_new_delivery(engine: Engine, make_order: OrderFactory) -> None:
    endpoint = outbox.add_endpoint(engine, "https://hooks.example/gone", api_key_id=None)[0]
    with engine.begin() as connection:
        connection.execute(
            update(webhook_endpoints)
            .where(webhook_endpoints.c.endpoint_id == endpoint.endpoint_id)
            .values(disabled_at=func.now(), disabled_reason="answered 410 Gone")
        )
    make_order(number="EV-11")
    service.set_status(engine, "EV-11", "Processing")
    assert count(engine, webhook_events) == 1 and count(engine, webhook_deliveries) == 0


def test_concurrent_changes_of_one_order_get_one_event_each_in_a_gapless_sequence(
    engine: Engine, make_order: OrderFactory
) -> None:
    numbers = [f"EV-C{i}" for i in range(15)]
    for number in numbers:
        make_order(number=number, payment_status="PaymentPending")
    start = threading.Barrier(3)
    failures: list[BaseException] = []

    def run(change: Any) -> None:
        start.wait(timeout=10)
        for number in numbers:
            try:
                change(number)
            except BaseException as error:  # collected: a thread's failure must fail the test
                failures.append(error)

    threads = [
        threading.Thread(target=run, args=(lambda n: service.set_payment(engine, n, "PaymentOK"),)),
        threading.Thread(target=run, args=(lambda n: service.claim(engine, n, "Grace Hopper"),)),
        threading.Thread(target=run, args=(lambda n: service.set_status(engine, n, "Processing"),)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    for number in numbers:
        events = events_of(engine, number)
        assert [e.sequence for e in events] == [1, 2, 3]
        assert sorted(e.type for e in events) == sorted(
            [EventType.STATUS_CHANGED, EventType.STATUS_CHANGED, EventType.CLAIMED]
        )
        # Each event's "from" is the previous event's "to": the changes were serialised, none lost.
        for before, after in pairwise(events):
            assert (after.from_status, after.from_payment) == (before.status, before.payment_status)


def test_orders_made_or_imported_write_no_event(engine: Engine, settings: Settings, api_code: str) -> None:
    with engine.connect() as connection:
        key = service.active_key_id(connection, settings.environment, api_code)
    with engine.begin() as connection:
        connection.execute(
            insert(orders).values(
                order_id="0f8fad5b-d9cb-469f-a165-70867728950e",
                order_number="EV-12",
                api_key_id=key,
                status="Ordered",
                payment_status="PaymentOK",
                created_at=func.now(),
                placed_at=func.now(),
            )
        )
    service.create_order(engine, settings.environment, api_code, number="EV-13")
    assert count(engine, webhook_events) == 0
