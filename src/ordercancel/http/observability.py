"""Operability: one structured JSON log line per request, and Prometheus metrics.

Both hang off the App's observer hook, which runs after the response has been sent, so
neither adds to the latency a client sees. Neither ever sees an API code: the log line
carries the key's row id, which names a key to an operator without revealing it.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import orjson

from ordercancel.http.core import Handler, Request, Response

ACCESS_LOGGER = "ordercancel.access"
#: Upper bounds of the latency histogram, in seconds: from a fast cache hit to a stalled disk.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The endpoint label of a request to no known path: a label per unknown path would let a
#: scanner grow the metrics without bound.
OTHER_ENDPOINT = "other"
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, then the record's `fields`.

    Pass structured data as `extra={"fields": {...}}`: one dict to copy, not a record to scan.
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def _time(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self._time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str = "INFO") -> dict[str, Any]:
    """The dictConfig for `ordercancel serve`: every line on stderr is one JSON object, uvicorn's too.

    It is handed to uvicorn, which applies it in every worker process.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = {
        **LOGGING_CONFIG,
        "formatters": {**LOGGING_CONFIG["formatters"], "json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            **LOGGING_CONFIG["handlers"],
            "default": {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
            "json": {"formatter": "json", "class": "logging.StreamHandler", "stream": "ext://sys.stderr"},
        },
        "loggers": {
            **LOGGING_CONFIG["loggers"],
            "ordercancel": {"handlers": ["json"], "level": level, "propagate": False},
        },
    }
    return config


def is_database_error(error: BaseException | None) -> bool:
    """Tell whether an exception came from the database driver (SQLite or PostgreSQL)."""
    if error is None:
        return False
    return isinstance(error, sqlite3.Error) or type(error).__module__.split(".")[0] in ("psycopg", "psycopg_pool")


class Metrics:
    """Requests by endpoint, outcome and status, a latency histogram per endpoint, database errors.

    Counters live in this process: behind several workers, each answers for itself (see the README).
    """

    def __init__(self, endpoints: Iterable[str]) -> None:
        self._endpoints = frozenset(endpoints)
        self._requests: dict[tuple[str, str, int], int] = {}
        self._buckets: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}
        self.database_errors = 0
        self.rate_limit_storage_errors = 0

    def count_rate_limit_storage_error(self) -> None:
        self.rate_limit_storage_errors += 1

    def endpoint(self, path: str) -> str:
        return path if path in self._endpoints else OTHER_ENDPOINT

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

    def exposition(self) -> bytes:
        """Render the Prometheus text exposition format (version 0.0.4)."""
        lines = [
            "# HELP ordercancel_requests_total HTTP requests answered, by endpoint, outcome code and status.",
            "# TYPE ordercancel_requests_total counter",
        ]
        for (endpoint, outcome, status), count in sorted(self._requests.items()):
            lines.append(
                f'ordercancel_requests_total{{endpoint="{endpoint}",outcome="{outcome}",status="{status}"}} {count}'
            )
        lines += [
            "# HELP ordercancel_request_duration_seconds Time from the request reaching the app to its answer sent.",
            "# TYPE ordercancel_request_duration_seconds histogram",
        ]
        name = "ordercancel_request_duration_seconds"
        for endpoint, buckets in sorted(self._buckets.items()):
            cumulative = 0
            for bound, count in zip((*(repr(b) for b in LATENCY_BUCKETS), "+Inf"), buckets, strict=True):
                cumulative += count
                lines.append(f'{name}_bucket{{endpoint="{endpoint}",le="{bound}"}} {cumulative}')
            lines.append(f'{name}_sum{{endpoint="{endpoint}"}} {self._sums[endpoint]!r}')
            lines.append(f'{name}_count{{endpoint="{endpoint}"}} {cumulative}')
        lines += [
            "# HELP ordercancel_database_errors_total Requests that failed on a database error.",
            "# TYPE ordercancel_database_errors_total counter",
            f"ordercancel_database_errors_total {self.database_errors}",
            "# HELP ordercancel_rate_limit_storage_errors_total Rate-limit checks that failed on their storage"
            " (the request was served without the limit).",
            "# TYPE ordercancel_rate_limit_storage_errors_total counter",
            f"ordercancel_rate_limit_storage_errors_total {self.rate_limit_storage_errors}",
        ]
        return ("\n".join(lines) + "\n").encode()

    def handler(self) -> Handler:
        async def metrics(request: Request) -> Response:
            return Response(200, self.exposition(), METRICS_CONTENT_TYPE)

        return metrics


class AccessLog:
    """One JSON line per request: request id, endpoint, status, outcome code, latency, key id, client."""

    def __init__(self, metrics: Metrics, logger: logging.Logger | None = None) -> None:
        self._metrics = metrics
        self._log = logger or logging.getLogger(ACCESS_LOGGER)

    def observe(self, request: Request, response: Response, elapsed: float) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        fields = {
            "request_id": request.request_id,
            "method": request.method,
            "endpoint": self._metrics.endpoint(request.path),
            "status": response.status,
            "outcome": response.outcome,
            "latency_ms": round(elapsed * 1000, 3),
            "key_id": request.key_id,
            "client": request.client,
        }
        self._log.info("request", extra={"fields": fields})
