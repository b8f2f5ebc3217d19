"""Measure what the observers (metrics and the JSON access log) add to each request, in microseconds.

Run: .venv/bin/python bench/observer_cost.py
The observers run after the response is sent, so this is CPU time per request, not latency a
client sees; at ~60 µs per request on the hot path it is the share of throughput they cost.

The metrics are measured three ways: the hand-written per-process counters they replaced (kept
below as the baseline), prometheus_client counting in memory (one process), and prometheus_client
in multiprocess mode (`serve --workers N`: every increment goes to a memory-mapped file), the
last both as `Metrics` does it and with a `labels()` look-up per request. Each figure is the best
of several runs, since the machine is shared.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

import orjson

from ordercancel.http.app import BY_NUMBER_PATH
from ordercancel.http.core import BodyDeadlines, Request, Response
from ordercancel.http.observability import (
    ACCESS_LOGGER,
    LATENCY_BUCKETS,
    MULTIPROC_ENV,
    OTHER_ENDPOINT,
    AccessLog,
    JsonFormatter,
    Metrics,
    is_database_error,
)

ROUNDS = 200_000
RUNS = 5
Observe = Callable[[Request, Response, float], None]


class HandWrittenMetrics:
    """The per-process counters /metrics used before prometheus_client: the baseline."""

    def __init__(self, endpoints: Iterable[str]) -> None:
        self._endpoints = frozenset(endpoints)
        self._requests: dict[tuple[str, str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self.database_errors = 0

    def observe(self, request: Request, response: Response, elapsed: float) -> None:
        endpoint = request.path if request.path in self._endpoints else OTHER_ENDPOINT
        outcome = "-" if response.outcome is None else str(response.outcome)
        key = (endpoint, outcome, response.status)
        self._requests[key] = self._requests.get(key, 0) + 1
        buckets = self._buckets.get(endpoint)
        if buckets is None:
            buckets = self._buckets[endpoint] = [0] * (len(LATENCY_BUCKETS) + 1)
            self._sums[endpoint] = 0.0
        buckets[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        self._sums[endpoint] += elapsed
        if response.failure is not None and is_database_error(response.failure):
            self.database_errors += 1


def labels_per_request(metrics: Metrics) -> Observe:
    """The textbook use of prometheus_client: look the children up by their labels on every request."""
    requests, duration = metrics._requests, metrics._duration

    def observe(request: Request, response: Response, elapsed: float) -> None:
        endpoint = metrics.endpoint(request.path)
        requests.labels(endpoint, str(response.outcome), str(response.status)).inc()
        duration.labels(endpoint).observe(elapsed)

    return observe


def _request() -> Request:
    async def receive() -> dict[str, object]:  # pragma: no cover - never called
        return {}

    return Request(
        method="POST",
        path=BY_NUMBER_PATH,
        query="",
        headers={},
        client="127.0.0.1",
        request_id="0123456789abcdef0123456789abcdef",
        path_params={},
        _receive=receive,
        _max_body=65536,
        _deadlines=BodyDeadlines(10.0),
        key_id=1,
    )


def per_call(observe: Observe, rounds: int = ROUNDS) -> float:
    """Return the best of RUNS runs, in µs per call."""
    request, response = _request(), Response(200, b"{}", outcome=0)
    best = float("inf")
    for _ in range(RUNS):
        started = time.perf_counter()
        for _ in range(rounds):
            observe(request, response, 0.0012)
        best = min(best, (time.perf_counter() - started) / rounds * 1e6)
    return best


def multiprocess_figures() -> dict[str, float]:
    """Measure prometheus_client's multiprocess mode in a child, which imports it with the variable set."""
    with tempfile.TemporaryDirectory(prefix="ordercancel-metrics-bench-") as directory:
        output = subprocess.run(
            [sys.executable, __file__, "--multiprocess"],
            env={**os.environ, MULTIPROC_ENV: directory},
            check=True,
            capture_output=True,
        ).stdout
    figures: dict[str, float] = orjson.loads(output)
    return figures


def measure_multiprocess() -> None:
    metrics = Metrics([BY_NUMBER_PATH], multiprocess_dir=os.environ[MULTIPROC_ENV])
    figures = {"bound": per_call(metrics.observe), "labels": per_call(labels_per_request(metrics))}
    sys.stdout.write(orjson.dumps(figures).decode())


def main() -> None:
    hand_written = per_call(HandWrittenMetrics([BY_NUMBER_PATH]).observe)
    in_memory = per_call(Metrics([BY_NUMBER_PATH]).observe)
    shared = multiprocess_figures()
    print(f"metrics, hand-written per process (before): {hand_written:6.2f} µs/request")
    print(f"metrics, prometheus_client in memory:       {in_memory:6.2f} µs/request")
    print(f"metrics, prometheus_client multiprocess:    {shared['bound']:6.2f} µs/request  (serve --workers N)")
    print(f"  the same with labels() on every request:  {shared['labels']:6.2f} µs/request")

    metrics = Metrics([BY_NUMBER_PATH])
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.propagate = False
    # A real file, so each line costs its write(2) as it does on stderr.
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    access = AccessLog(metrics, logger)
    logger.setLevel(logging.INFO)
    print(f"access log, JSON line written:              {per_call(access.observe, ROUNDS // 4):6.2f} µs/request")
    logger.setLevel(logging.WARNING)
    print(f"access log, level above INFO:               {per_call(access.observe):6.2f} µs/request")


if __name__ == "__main__":
    measure_multiprocess() if sys.argv[1:] == ["--multiprocess"] else main()
