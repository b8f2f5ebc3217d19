"""Crash consistency: SIGKILL `ordercancel serve` at random moments under load, restart, and check.

After every kill: each order a client saw `isCanceled: true` for is cancelled in the database,
each cancelled order has exactly one audit row with outcome 0 (and no audit row claims a
cancellation the order does not show), and the database passes its integrity check.

`make test` kills the server a few times; `make crash` sets ORDERCANCEL_CRASH_KILLS=25.
"""

from __future__ import annotations

import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, insert, text

from ordercancel.config import Environment, Settings
from ordercancel.storage import database, service
from ordercancel.storage.database import utcnow
from ordercancel.storage.schema import orders
from tests.support.serving import ServeProcess
from tests.support.wire import BY_NUMBER

#: Each test here starts `ordercancel serve` in a subprocess: outside `make test-fast`.
pytestmark = pytest.mark.subprocess

KILLS = int(os.environ.get("ORDERCANCEL_CRASH_KILLS", "3"))
ORDERS = 400 + 800 * KILLS
CLIENTS = 6


@dataclass
class Tally:
    acknowledged: set[str] = field(default_factory=set)
    answered: int = 0
    transport_errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(
    served: ServeProcess, api_code: str, work: queue.SimpleQueue[str], stop: threading.Event, tally: Tally
) -> None:
    with httpx.Client(base_url=served.url, timeout=3) as http:
        while not stop.is_set():
            try:
                number = work.get_nowait()
            except queue.Empty:
                return
            try:
                response = http.post(
                    BY_NUMBER,
                    json={"orderNumber": number},
                    headers={"apiCode": api_code, "Accept": "application/json"},
                )
            except httpx.TransportError:
                work.put(number)  # the server is gone: try again after the restart
                with tally.lock:
                    tally.transport_errors += 1
                time.sleep(0.01)
                continue
            answer = response.json()
            assert response.status_code == 200, answer
            with tally.lock:
                tally.answered += 1
                if answer["isCanceled"]:
                    tally.acknowledged.add(number)
                else:
                    assert answer["requestError"]["code"] == 507, answer  # a retry of one that was cancelled


def _integrity(engine: Engine) -> list[str]:
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            return [str(row[0]) for row in connection.execute(text("PRAGMA integrity_check"))]
    # PostgreSQL: amcheck verifies every B-tree index of ours against its table (heapallindexed).
    with engine.begin() as connection:
        connection.execute(text("CREATE EXTENSION IF NOT EXISTS amcheck"))
        indexes = connection.execute(
            text(
                "SELECT c.oid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_class t ON t.oid = i.indrelid "
                "WHERE t.relname IN ('orders', 'api_keys', 'cancellation_attempts')"
            )
        ).scalars()
        for index in list(indexes):
            connection.execute(text("SELECT bt_index_check(CAST(:index AS regclass), true)"), {"index": index})
    return ["ok"]


def _check(engine: Engine, tally: Tally) -> tuple[int, int]:
    """Check the invariants; return (cancelled orders, audit rows)."""
    assert _integrity(engine) == ["ok"]
    with engine.connect() as connection:
        cancelled = {
            str(row[0])
            for row in connection.execute(text("SELECT order_number FROM orders WHERE status = 'Cancelled'"))
        }
        audited = list(
            connection.execute(
                text(
                    "SELECT o.order_number, count(*) FROM cancellation_attempts a JOIN orders o ON o.id = a.order_ref "
                    "WHERE a.outcome = 0 GROUP BY o.order_number"
                )
            )
        )
        attempts = connection.scalar(text("SELECT count(*) FROM cancellation_attempts")) or 0
    lost = tally.acknowledged - cancelled
    assert not lost, f"{len(lost)} acknowledged cancellations are not in the database: {sorted(lost)[:5]}"
    assert {str(number) for number, _ in audited} == cancelled, "a cancellation without its audit row, or the reverse"
    assert all(count == 1 for _, count in audited), "an order cancelled twice"
    return len(cancelled), int(attempts)


@pytest.fixture
def engine(own_database_url: str) -> Iterator[Engine]:
    engine = database.create_sync_engine(Settings(database_url=own_database_url))
    yield engine
    engine.dispose()


def test_acknowledged_cancellations_survive_sigkill_at_random_moments(
    own_database_url: str, engine: Engine, tmp_path: Path
) -> None:
    settings = Settings(database_url=own_database_url, environment=Environment.SANDBOX)
    code = service.create_key(engine, settings.environment, "crash test")
    numbers = [f"CRASH-{i:05d}" for i in range(ORDERS)]
    key_id = service.list_keys(engine, settings.environment)[0].id
    now = utcnow()
    with engine.begin() as connection:
        connection.execute(
            insert(orders),
            [
                {
                    "order_id": str(uuid.uuid4()),
                    "order_number": number,
                    "api_key_id": key_id,
                    "status": "Ordered",
                    "payment_status": "PaymentOK",
                    "created_at": now,
                    "placed_at": now,
                }
                for number in numbers
            ],
        )
    work: queue.SimpleQueue[str] = queue.SimpleQueue()
    for number in numbers:
        work.put(number)
    seed = random.randrange(2**32)
    chance = random.Random(seed)
    tally = Tally()
    served = ServeProcess(own_database_url, tmp_path / "serve.log")
    served.start()
    kills = 0
    try:
        while kills < KILLS:
            stop = threading.Event()
            clients = [
                threading.Thread(target=_client, args=(served, code, work, stop, tally), daemon=True)
                for _ in range(CLIENTS)
            ]
            for client in clients:
                client.start()
            time.sleep(chance.uniform(0.05, 0.6))
            served.kill()
            kills += 1
            stop.set()
            for client in clients:
                client.join(timeout=10)
            _check(engine, tally)
            served.start()
        stop = threading.Event()
        rest = [threading.Thread(target=_client, args=(served, code, work, stop, tally)) for _ in range(CLIENTS)]
        for client in rest:
            client.start()
        for client in rest:
            client.join(timeout=120)
    finally:
        served.stop()
    cancelled, attempts = _check(engine, tally)
    print(
        f"\ncrash test ({own_database_url.split(':', maxsplit=1)[0]}, seed {seed}): {kills} SIGKILLs, "
        f"{tally.answered} answers, "
        f"{len(tally.acknowledged)} acknowledged cancellations, {cancelled} cancelled in the database, "
        f"{attempts} audit rows, {tally.transport_errors} requests cut off by a kill, 0 lost"
    )
    assert cancelled == ORDERS  # every order was eventually cancelled, exactly once
    assert "Traceback" not in served.logs()
