"""Operability: one structured JSON log line per request, and Prometheus metrics.

Both hang off the App's observer hook, which runs after the response has been sent, so
neither adds to the latency a client sees. Neither ever sees an API code: the log line
carries the key's row id, which names a key to an operator without revealing it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from ordercancel.http.core import Handler, Request, Response

ACCESS_LOGGER = "ordercancel.access"
#: Upper bounds of the latency histogram, in seconds: from a fast cache hit to a stalled disk.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: The endpoint label of a request to no known path: a label per unknown path would let a
#: scanner grow the metrics without bound.
OTHER_ENDPOINT = "other"
METRICS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
#: The Prometheus client's own variable: the directory its multiprocess mode counts in.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


class LogTime:
    """Render a time.time() as the log lines' UTC stamp, to the millisecond: strftime once a second."""

    def __init__(self) -> None:
        self._second = -1
        self._stamp = ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # strftime once a second, not once a line
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((created - second) * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message, then the record's `fields`.

    Pass structured data as `extra={"fields": {...}}`: one dict to copy, not a record to scan.
    """

    def __init__(self) -> None:
        super().__init__()
        self._time = LogTime()

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

    Given `multiprocess_dir`, every worker of `serve --workers N` counts into its own files there
    (the Prometheus client's multiprocess mode) and `/metrics` on any of them sums all the files:
    the deployment's figures, whichever worker a scrape reaches. Without it, the counts are this
    process's own, for a single process and the tests.
    """

    def __init__(
        self,
        endpoints: Iterable[str],
        *,
        multiprocess_dir: str | None = None,
        backlog: Callable[[], tuple[int, float]] | None = None,
    ) -> None:
        if multiprocess_dir is not None and not getattr(values.ValueClass, "_multiprocess", False):
            # The client picks its storage when it is first imported: counted in memory, nothing
            # would reach the files, and every scrape would sum the other workers' files only.
            raise RuntimeError(f"{MULTIPROC_ENV} must be set before prometheus_client is imported")
        self._endpoints = frozenset(endpoints)
        registry = CollectorRegistry(auto_describe=True)  # this app's own: several apps may share a process
        self._requests = Counter(
            "ordercancel_requests_total",
            "HTTP requests answered, by endpoint, outcome code and status.",
            ("endpoint", "outcome", "status"),
            registry=registry,
        )
        self._duration = Histogram(
            "ordercancel_request_duration_seconds",
            "Time from the request reaching the app to its answer sent.",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self._database_errors = Counter(
            "ordercancel_database_errors_total", "Requests that failed on a database error.", registry=registry
        )
        self._rate_limit_storage_errors = Counter(
            "ordercancel_rate_limit_storage_errors_total",
            "Rate-limit checks that failed on their storage (the request was served without the limit).",
            registry=registry,
        )
        self._webhook_deliveries = Counter(
            "ordercancel_webhook_deliveries_total",
            "Webhook delivery attempts, by outcome: delivered, retried (later), failed (for good), gone (410).",
            ("outcome",),
            registry=registry,
        )
        #: The bound methods to call for each (endpoint, outcome, status): `labels()` costs more
        #: than the increments it leads to. Bounded: our endpoints, outcome codes and statuses.
        self._bound: dict[tuple[str, int | None, int], tuple[Callable[[float], None], Callable[[float], None]]] = {}
        self._scraped = CollectorRegistry(auto_describe=True)
        if multiprocess_dir is None:
            self._scraped.register(_WithoutCreated(registry))
        else:
            MultiProcessCollector(self._scraped, path=multiprocess_dir)  # type: ignore[no-untyped-call]
        if backlog is not None:  # the database's own figures: the same whichever worker is scraped
            self._scraped.register(_Backlog(backlog))

    def count_webhook(self, outcome: str) -> None:
        self._webhook_deliveries.labels(outcome).inc()

    def count_rate_limit_storage_error(self) -> None:
        self._rate_limit_storage_errors.inc()

    def endpoint(self, path: str) -> str:
        return path if path in self._endpoints else OTHER_ENDPOINT

    def _bind(self, key: tuple[str, int | None, int]) -> tuple[Callable[[float], None], Callable[[float], None]]:
        endpoint, outcome, status = key
        count = self._requests.labels(endpoint, "-" if outcome is None else str(outcome), str(status)).inc
        bound = self._bound[key] = (count, self._duration.labels(endpoint).observe)
        return bound

    def observe(self, request: Request, response: Response, elapsed: float) -> None:
        key = (request.path if request.path in self._endpoints else OTHER_ENDPOINT, response.outcome, response.status)
        count, duration = self._bound.get(key) or self._bind(key)
        count(1)
        duration(elapsed)
        if response.failure is not None and is_database_error(response.failure):
            self._database_errors.inc()

    def exposition(self) -> bytes:
        """Render the Prometheus text exposition format (version 0.0.4), summed over the workers."""
        return generate_latest(self._scraped)

    def handler(self) -> Handler:
        async def metrics(request: Request) -> Response:
            # In a thread: the webhook backlog is a database query, and the loop keeps serving.
            return Response(200, await asyncio.to_thread(self.exposition), METRICS_CONTENT_TYPE)

        return metrics


class _Backlog(Collector):
    """The webhook outbox as the database holds it: pending deliveries and the oldest one's age."""

    _BACKLOG = ("ordercancel_webhook_backlog", "Webhook deliveries not yet delivered nor failed.")
    _AGE = (
        "ordercancel_webhook_oldest_undelivered_age_seconds",
        "Age of the oldest event with a delivery still pending (0: none).",
    )

    def __init__(self, read: Callable[[], tuple[int, float]]) -> None:
        self._read = read

    def describe(self) -> Iterable[Metric]:
        # Registration asks for the names: without this it would collect, querying the database.
        return [GaugeMetricFamily(*self._BACKLOG), GaugeMetricFamily(*self._AGE)]

    def collect(self) -> Iterable[Metric]:
        try:
            pending, age = self._read()
        except Exception:  # the database is away: the other metrics are wanted all the more
            return []
        return [GaugeMetricFamily(*self._BACKLOG, value=pending), GaugeMetricFamily(*self._AGE, value=age)]


class _WithoutCreated(Collector):
    """Render in-process metrics as the multiprocess mode does: without the `_created` series.

    One worker or several, a dashboard then sees the same series.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            metric.samples = [sample for sample in metric.samples if not sample.name.endswith("_created")]
            yield metric


def share_metrics_between_workers() -> str:
    """Give the workers this process is about to start a fresh private metrics directory; remove it at exit.

    Set before uvicorn spawns its workers, the variable reaches each of them before its first
    import of prometheus_client. The directory is new, so no earlier run's counts are summed in.
    A worker that dies leaves its files: its requests stay counted, as a counter must, and the
    worker that replaces it counts into files of its own. (`mark_process_dead` only removes
    live gauges' files, and there are none here.)
    """
    path = tempfile.mkdtemp(prefix="ordercancel-metrics-")
    os.environ[MULTIPROC_ENV] = path
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


class AccessLog:
    """One JSON line per request: request id, endpoint, status, outcome code, latency, key id, client.

    The line is what `JsonFormatter` would write for `log.info("request", extra={"fields": ...})`,
    the same keys in the same order, but built by one `orjson.dumps` instead of a LogRecord and a
    formatter, and the lines of one event-loop turn reach the stream in one write: a write per
    request was most of the log's cost (docs/performance.md). That fast path is taken only when
    the logger would hand the record to one JSON stream handler and nothing else (as
    `logging_config` sets it up); any other set-up (a test's capture, a filter, other handlers)
    gets an ordinary log call. Buffered lines are written at the end of their turn, when
    `MAX_BUFFERED` lines are waiting, and at interpreter exit, so a crash loses at most one turn's.
    """

    MAX_BUFFERED = 256

    def __init__(self, metrics: Metrics, logger: logging.Logger | None = None) -> None:
        self._metrics = metrics
        self._log = logger or logging.getLogger(ACCESS_LOGGER)
        self._time = LogTime()
        self._lines: list[bytes] = []
        #: The handler the lines of this turn go to, or None when they go through `logging`.
        self._handler: logging.StreamHandler[Any] | None = None
        _UNFLUSHED.add(self)

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
        first = not self._lines
        if first:  # the first line of this turn: see where lines go now
            self._handler = self._json_stream()
            if self._handler is None:
                self._log.info("request", extra={"fields": fields})
                return
        line: dict[str, object] = {
            "time": self._time(time.time()),
            "level": "info",
            "logger": self._log.name,
            "message": "request",
        }
        line.update(fields)
        self._lines.append(orjson.dumps(line, default=str, option=orjson.OPT_APPEND_NEWLINE))
        if first:
            _call_soon(self.flush)
        elif len(self._lines) >= self.MAX_BUFFERED:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines to their stream in one write."""
        lines, self._lines, handler = self._lines, [], self._handler
        if not lines or handler is None:
            return
        with handler.lock or contextlib.nullcontext():  # in order with the lines logged by other threads
            try:
                handler.stream.write(b"".join(lines).decode())
                handler.flush()
            except (OSError, ValueError):  # a closed or broken stream: as logging does, never fail the caller
                pass

    def _json_stream(self) -> logging.StreamHandler[Any] | None:
        """The one JSON stream handler an INFO record of this logger would reach, if that is all it would reach."""
        found: list[logging.Handler] = []
        logger: logging.Logger | None = self._log
        while logger is not None:
            if logger.filters:
                return None
            found.extend(handler for handler in logger.handlers if handler.level <= logging.INFO)
            if not logger.propagate:
                break
            logger = logger.parent
        if len(found) != 1:
            return None
        [handler] = found
        if not isinstance(handler, logging.StreamHandler) or handler.filters:
            return None
        if type(handler.formatter) is not JsonFormatter:
            return None
        return handler


def _call_soon(flush: Callable[[], None]) -> None:
    """Run `flush` at the end of this event-loop turn; at once outside a running loop."""
    try:
        asyncio.get_running_loop().call_soon(flush)
    except RuntimeError:
        flush()


#: The access logs that may hold lines at interpreter exit (a loop stopped before its last turn's flush).
_UNFLUSHED: weakref.WeakSet[AccessLog] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    for access_log in list(_UNFLUSHED):
        access_log.flush()
