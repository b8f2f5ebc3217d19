"""`/metrics` behind `serve --workers 2` counts the whole deployment, whichever worker answers the scrape.

What is counted exactly: the requests to the two cancellation endpoints, in total and per label.
Scrapes count themselves (endpoint "/metrics") and start-up polls "/healthz"; both are left out
by their endpoint label, since a scrape's own count lands only after its answer is sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from ordercancel.config import Settings
from tests.support.orders import OrderFactory
from tests.support.serving import ServeProcess
from tests.support.wire import BY_ID, BY_NUMBER, decode

SCRAPES = 10
ORDERS = 12
#: Rounds of refusals sent at most until both workers have answered some (each round: 16 requests).
ROUNDS = 20
STARTUP_SECONDS = 120.0
UNKNOWN_CODE = "0f8fad5b-d9cb-469f-a165-70867728950e"

Labels = tuple[str, str, str]

pytestmark = pytest.mark.subprocess  # `ordercancel serve --workers 2`


def api_requests(exposition: str) -> Counter[Labels]:
    """Read ordercancel_requests_total for the cancellation endpoints, by (endpoint, outcome, status)."""
    counts: Counter[Labels] = Counter()
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "ordercancel_requests_total" and sample.labels["endpoint"] in (BY_NUMBER, BY_ID):
                counts[sample.labels["endpoint"], sample.labels["outcome"], sample.labels["status"]] += int(
                    sample.value
                )
    return counts


def scrape(url: str) -> Counter[Labels]:
    """Scrape on a connection of its own, so that any worker may answer it."""
    with httpx.Client(base_url=url, timeout=10) as client:
        response = client.get("/metrics")
    assert response.status_code == 200
    return api_requests(response.text)


def settled(url: str, expected: Counter[Labels], timeout: float = 10.0) -> Counter[Labels]:
    """Scrape until the counts reach `expected`: a worker counts a request just after answering it."""
    deadline = time.monotonic() + timeout
    while (seen := scrape(url)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def per_worker(directory: Path) -> dict[int, int]:
    """Each worker's own count of cancellation requests, read from its file in the shared directory."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        total = 0
        for metric in MultiProcessCollector.merge([str(path)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == "ordercancel_requests_total" and sample.labels["endpoint"] in (BY_NUMBER, BY_ID):
                    total += int(sample.value)
        counts[int(path.stem.split("_")[1])] = total
    return counts


async def _post_all(url: str, requests: list[tuple[str, dict[str, str], str]]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)  # a connection per request
    async with httpx.AsyncClient(base_url=url, timeout=20, limits=limits) as client:
        return await asyncio.gather(
            *(client.post(path, json=body, headers={"apiCode": code}) for path, body, code in requests)
        )


class Traffic:
    """Send cancellation requests, keeping the count the metrics must show, label by label."""

    def __init__(self, url: str, api_code: str) -> None:
        self.url = url
        self.api_code = api_code
        self.sent: Counter[Labels] = Counter()

    def send(self, requests: list[tuple[str, dict[str, str], str]]) -> None:
        for (path, _, _), response in zip(requests, asyncio.run(_post_all(self.url, requests)), strict=True):
            error = decode(response).get("requestError")
            outcome = str(error["code"]) if error else "0"
            self.sent[path, outcome, str(response.status_code)] += 1

    def cancel(self, numbers: list[str]) -> None:
        self.send([(BY_NUMBER, {"orderNumber": number}, self.api_code) for number in numbers])

    def refusals(self) -> None:
        """Ask for an order that does not exist (505) and with a key that does not exist (401)."""
        self.send(
            [(BY_NUMBER, {"orderNumber": "IMC999999"}, self.api_code)] * 12
            + [(BY_ID, {"orderId": "0f8fad5b-d9cb-469f-a165-70867728950f"}, UNKNOWN_CODE)] * 4
        )


@pytest.fixture
def two_workers(settings: Settings, tmp_path: Path) -> Iterator[tuple[ServeProcess, Path]]:
    """`serve --workers 2`, with a TMPDIR of its own to find the directory its workers count in."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {"TMPDIR": str(temp), "ORDERCANCEL_POOL_SIZE": str(settings.pool_size)}
    served = ServeProcess(settings.database_url, tmp_path / "serve.log", extra_args=("--workers", "2"), env=env)
    # Two workers importing the app at once on a loaded 2-core machine can take a minute or more.
    served.start(timeout=STARTUP_SECONDS)
    try:
        [directory] = temp.glob("ordercancel-metrics-*")
        deadline = time.monotonic() + STARTUP_SECONDS
        while len(per_worker(directory)) < 2 and time.monotonic() < deadline:  # the second worker's app
            time.sleep(0.1)
        assert len(per_worker(directory)) == 2, served.logs()
        yield served, directory
    finally:
        served.stop()
    assert not directory.exists(), "serve leaves its metrics directory behind"
    assert "Traceback" not in served.logs()


def test_every_scrape_of_any_worker_counts_the_requests_of_both(
    two_workers: tuple[ServeProcess, Path], api_code: str, make_order: OrderFactory
) -> None:
    served, directory = two_workers
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700  # private to the service's user
    traffic = Traffic(served.url, api_code)
    numbers = [make_order().order_number for _ in range(ORDERS)]
    traffic.cancel(numbers)  # each cancelled: isCanceled true
    traffic.cancel(numbers)  # each again: 507
    traffic.refusals()
    # Each worker alone must hold only part of the count, or a scrape of one would show it all.
    for _ in range(ROUNDS):
        if len([count for count in per_worker(directory).values() if count > 0]) == 2:
            break
        traffic.refusals()
    assert traffic.sent[BY_NUMBER, "0", "200"] == ORDERS
    assert traffic.sent[BY_NUMBER, "507", "200"] == ORDERS
    total = sum(traffic.sent.values())

    assert settled(served.url, traffic.sent) == traffic.sent
    assert all(0 < count < total for count in per_worker(directory).values()), per_worker(directory)
    for _ in range(SCRAPES):
        seen = scrape(served.url)
        assert seen == traffic.sent
        assert sum(seen.values()) == total


def test_a_worker_killed_and_replaced_keeps_its_requests_counted(
    two_workers: tuple[ServeProcess, Path], api_code: str, make_order: OrderFactory
) -> None:
    served, directory = two_workers
    traffic = Traffic(served.url, api_code)
    traffic.cancel([make_order().order_number for _ in range(ORDERS)])
    for _ in range(ROUNDS):
        traffic.refusals()
        if len([count for count in per_worker(directory).values() if count > 0]) == 2:
            break
    assert settled(served.url, traffic.sent) == traffic.sent
    counts = per_worker(directory)
    victim = max(counts, key=lambda pid: counts[pid])
    os.kill(victim, signal.SIGKILL)  # no shutdown hook runs: what its files hold is all there is
    deadline = time.monotonic() + STARTUP_SECONDS
    while len(per_worker(directory)) < 3 and time.monotonic() < deadline:  # uvicorn starts a replacement
        time.sleep(0.1)
    assert len(per_worker(directory)) == 3, served.logs()

    traffic.refusals()  # answered by the survivor and the replacement
    assert settled(served.url, traffic.sent) == traffic.sent
    for _ in range(SCRAPES):
        assert scrape(served.url) == traffic.sent
