"""Measure what the observers (metrics and the JSON access log) add to each request, in microseconds.

Run: .venv/bin/python bench/observer_cost.py
The observers run after the response is sent, so this is CPU time per request, not latency a
client sees; at ~60 µs per request on the hot path it is the share of throughput they cost.
"""

from __future__ import annotations

import logging
import os
import time

from ordercancel.http.app import BY_NUMBER_PATH
from ordercancel.http.core import BodyDeadlines, Request, Response
from ordercancel.http.observability import ACCESS_LOGGER, AccessLog, JsonFormatter, Metrics

ROUNDS = 200_000


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


def per_call(observe: object, rounds: int = ROUNDS) -> float:
    request, response = _request(), Response(200, b"{}", outcome=0)
    started = time.perf_counter()
    for _ in range(rounds):
        observe(request, response, 0.0012)  # type: ignore[operator]
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    metrics = Metrics([BY_NUMBER_PATH])
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.propagate = False
    # A real file, so each line costs its write(2) as it does on stderr.
    handler = logging.StreamHandler(open(os.devnull, "w"))  # noqa: SIM115
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    access = AccessLog(metrics, logger)
    logger.setLevel(logging.INFO)
    print(f"metrics.observe:              {per_call(metrics.observe):6.2f} µs/request")
    print(f"access log, JSON line written: {per_call(access.observe, ROUNDS // 4):6.2f} µs/request")
    logger.setLevel(logging.WARNING)
    print(f"access log, level above INFO:  {per_call(access.observe):6.2f} µs/request")


if __name__ == "__main__":
    main()
