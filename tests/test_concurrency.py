"""Exactly-once under concurrency, on both backends, through real servers over real sockets."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from ordercancel.config import Settings
from ordercancel.domain import AlreadyCancelled, ProcessingStarted, ProductionStatus
from ordercancel.storage import service
from tests.support.live import ADMIN_TOKEN
from tests.support.orders import OrderFactory
from tests.support.serving import free_port
from tests.support.wire import BY_NUMBER

WORKERS = 4


def workers(pid: int) -> list[int]:
    """The worker processes uvicorn spawned under pid (Linux /proc); not its resource tracker."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue  # the process ended while we looked
        if parent == pid and b"spawn_main" in command:
            found.append(int(stat.parent.name))
    return found


class ServeProcess:
    """`ordercancel serve --workers N` in a subprocess, on a free port."""

    def __init__(self, settings: Settings, count: int, log: Path) -> None:
        self.port = free_port()
        self.log = log
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ORDERCANCEL_DATABASE_URL": settings.database_url}
        argv = [
            *(sys.executable, "-m", "ordercancel.cli", "serve", "--port", str(self.port), "--workers", str(count)),
            *("--pool-size", str(settings.pool_size), "--admin-token", ADMIN_TOKEN),
        ]
        with log.open("wb") as output:  # a file, not a pipe: a pipe nobody reads can fill and stall the server
            self.process = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT)
        self._wait_until_serving(count)

    def _wait_until_serving(self, count: int) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")
                raise RuntimeError(f"ordercancel serve exited with {self.process.returncode}:\n{output}")
            try:
                ready = httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                ready = False
            if ready and len(workers(self.process.pid)) == count:
                return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("ordercancel serve did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def four_workers(settings: Settings, tmp_path: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(settings, WORKERS, tmp_path / "serve.log")
    yield server
    server.stop()
    assert "Traceback" not in server.log.read_text(errors="replace")


async def _cancel(client: httpx.AsyncClient, api_code: str, number: str) -> dict[str, object]:
    response = await client.post(
        BY_NUMBER, json={"orderNumber": number}, headers={"apiCode": api_code, "Accept": "application/json"}
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


@pytest.mark.subprocess
def test_serve_with_four_workers_runs_four_processes_sharing_the_port(four_workers: ServeProcess) -> None:
    assert len(workers(four_workers.process.pid)) == WORKERS
    assert httpx.get(f"{four_workers.url}/healthz").json()["status"] == "ok"


@pytest.mark.subprocess
def test_of_fifty_concurrent_cancellations_through_four_workers_exactly_one_succeeds(
    four_workers: ServeProcess, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    order = make_order(status="Processing")

    async def fifty() -> list[dict[str, object]]:
        limits = httpx.Limits(max_connections=50, max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=four_workers.url, limits=limits, timeout=30) as client:
            return await asyncio.gather(*(_cancel(client, api_code, order.order_number) for _ in range(50)))

    bodies = asyncio.run(fifty())

    assert sum(body["isCanceled"] is True for body in bodies) == 1
    codes = Counter(body["requestError"]["code"] for body in bodies if not body["isCanceled"])  # type: ignore[index]
    assert codes == {AlreadyCancelled.code: 49}
    assert service.find_order(engine, order.order_id).status is ProductionStatus.CANCELLED
    with engine.connect() as connection:
        outcomes = connection.execute(text("SELECT outcome FROM cancellation_attempts")).scalars().all()
    assert Counter(outcomes) == {0: 1, AlreadyCancelled.code: 49}


ORDERS = 200
#: Orders raced at once; each race is two requests on two connections.
RACES_AT_ONCE = 16


@pytest.mark.subprocess
def test_a_cancellation_and_a_claim_racing_for_each_of_200_orders_never_both_win(
    four_workers: ServeProcess, engine: Engine, api_code: str, make_order: OrderFactory
) -> None:
    orders = [make_order(status="Ordered" if i % 2 else "Processing") for i in range(ORDERS)]
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def race_all() -> list[tuple[dict[str, object], httpx.Response]]:
        gate = asyncio.Semaphore(RACES_AT_ONCE)
        limits = httpx.Limits(max_connections=2 * RACES_AT_ONCE)
        async with httpx.AsyncClient(base_url=four_workers.url, limits=limits, timeout=30) as client:

            async def race(number: str, order_id: str) -> tuple[dict[str, object], httpx.Response]:
                async with gate:
                    claim = client.post(f"/admin/orders/{order_id}/claim", json={"engineer": "Ada"}, headers=admin)
                    return await asyncio.gather(_cancel(client, api_code, number), claim)

            return await asyncio.gather(*(race(o.order_number, o.order_id) for o in orders))

    results = asyncio.run(race_all())

    winners: Counter[str] = Counter()
    for order, (cancelled, claimed) in zip(orders, results, strict=True):
        stored = service.find_order(engine, order.order_id)
        if cancelled["isCanceled"]:
            winners["cancellation"] += 1
            assert claimed.status_code == 409
            assert "is Cancelled" in claimed.json()["error"]
            assert (stored.status, stored.engineer) == (ProductionStatus.CANCELLED, None)
        else:
            winners["claim"] += 1
            assert cancelled["requestError"] == {"message": ProcessingStarted.message, "code": ProcessingStarted.code}
            assert claimed.status_code == 200, claimed.text
            assert claimed.json() == service.order_fields(stored)
            assert (stored.status, stored.engineer) == (order.status, "Ada")
    assert sum(winners.values()) == ORDERS
    print(f"winners: {dict(winners)}")
