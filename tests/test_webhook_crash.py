"""At least once, through crashes: SIGKILL `ordercancel serve` while it delivers to a receiver that fails at random.

The server cancels orders (each one writes an order.cancelled event in its transaction) and
dispatches their deliveries to a receiver that answers 500, answers too late, hangs up, or
refuses connections altogether, at random. Killed and restarted several times, it must in the
end have delivered every event: every event's webhook-id was answered 2xx at least once, every
duplicate carried the same id and body, and the outbox holds no delivery still pending.
"""

from __future__ import annotations

import os
import random
import threading
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel.config import Environment, Settings
from ordercancel.storage import database, outbox, service
from tests.support.dispatching import states, wait_until
from tests.support.receiver import Delivery, Receiver
from tests.support.serving import ServeProcess
from tests.support.wire import BY_NUMBER

pytestmark = pytest.mark.subprocess

KILLS = int(os.environ.get("ORDERCANCEL_CRASH_KILLS", "3"))
ORDERS = 60 + 40 * KILLS
#: Many short retries: an event must outlive any run of the receiver's bad luck.
SCHEDULE = ",".join(["0.2s", "0.3s", "0.5s"] * 16)


def test_every_event_is_delivered_at_least_once_through_sigkills_and_a_failing_receiver(
    own_database_url: str, tmp_path: Path
) -> None:
    engine = database.create_sync_engine(Settings(database_url=own_database_url))
    try:
        _run(engine, own_database_url, tmp_path)
    finally:
        engine.dispose()


def _run(engine: Engine, database_url: str, tmp_path: Path) -> None:
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    #: What each endpoint's copy of each event was answered: a status, or None (none in time).
    answered: dict[tuple[str, str], list[int | None]] = {}
    lock = threading.Lock()

    def flaky(delivery: Delivery) -> int | None:
        roll = chance.random()
        status = 500 if roll < 0.2 else None if roll < 0.3 else 204
        late = 0.3 <= roll < 0.4
        if late:
            time.sleep(0.8)  # past the sender's timeout: this 204 comes too late to count
        with lock:
            answered.setdefault((delivery.path, delivery.webhook_id), []).append(None if late else status)
        return status

    code = service.create_key(engine, Environment.SANDBOX, "crash")
    numbers = [f"HOOK-{i:04d}" for i in range(ORDERS)]
    for number in numbers:
        service.create_order(engine, Environment.SANDBOX, code, number=number)
    with Receiver(flaky) as receiver:
        key_id = service.list_keys(engine, Environment.SANDBOX)[0].id
        outbox.add_endpoint(engine, receiver.url, api_key_id=key_id)
        outbox.add_endpoint(engine, receiver.url.replace("/hook", "/ops"), api_key_id=None)
        env = {
            "ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE": "1",
            "ORDERCANCEL_WEBHOOK_SCHEDULE": SCHEDULE,
            "ORDERCANCEL_WEBHOOK_TIMEOUT": "0.5",
        }
        served = ServeProcess(database_url, tmp_path / "serve.log", env=env)
        served.start()
        try:
            pending = list(numbers)
            for kill in range(KILLS + 1):
                share = pending[: len(numbers) // (KILLS + 1)] if kill < KILLS else pending
                pending = _cancel(served, code, share, pending)
                time.sleep(chance.uniform(0.1, 0.6))  # deliveries under way, some retrying
                if kill % 2 == 1:  # refused connections for a while
                    receiver.stop_listening()
                    time.sleep(chance.uniform(0.2, 0.6))
                    receiver.listen_again()
                if kill < KILLS:
                    served.kill()
                    served.start()
            assert pending == []
            wait_until(lambda: set(states(engine)) == {"delivered"}, timeout=120, what="every delivery delivered")
        finally:
            served.stop()

    with engine.connect() as connection:
        events = {str(row[0]) for row in connection.execute(text("SELECT event_id FROM webhook_events"))}
        cancelled = connection.scalar(text("SELECT count(*) FROM orders WHERE status = 'Cancelled'"))
    assert cancelled == ORDERS and len(events) == ORDERS  # one event per cancellation, no more
    for path in ("/hook", "/ops"):  # each endpoint got each event, answered 2xx in time at least once
        delivered = {event_id for (to, event_id), statuses in answered.items() if to == path and 204 in statuses}
        assert delivered == events, f"seed {seed}: {len(events - delivered)} events never delivered to {path}"
    bodies: dict[tuple[str, str], set[bytes]] = {}
    for delivery in receiver.received():
        bodies.setdefault((delivery.path, delivery.webhook_id), set()).add(delivery.body)
    assert all(len(same) == 1 for same in bodies.values()), "a retry carried another body under the same id"
    assert {path for path, _ in bodies} == {"/hook", "/ops"}
    duplicates = sum(len(statuses) for statuses in answered.values()) - len(answered)
    print(
        f"\nwebhook crash test ({database_url.split(':', maxsplit=1)[0]}, seed {seed}): {KILLS} SIGKILLs, "
        f"{ORDERS} events to 2 endpoints, {len(receiver.received())} requests received, "
        f"{duplicates} of them retries or duplicates, 0 lost"
    )
    assert "Traceback" not in served.logs()


def _cancel(served: ServeProcess, code: str, share: list[str], pending: list[str]) -> list[str]:
    """Cancel these orders (retrying what a restart cut off); return the ones still to cancel."""
    headers = {"apiCode": code, "Content-Type": "application/json", "Accept": "application/json"}
    left = list(pending)
    with httpx.Client(base_url=served.url, timeout=5) as http:
        for number in share:
            for _ in range(50):
                try:
                    answer = http.post(BY_NUMBER, headers=headers, json={"orderNumber": number}).json()
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                assert answer["isCanceled"] or answer["requestError"]["code"] == 507, answer
                left.remove(number)
                break
    return left
