"""Prototypes of issue 12's ideas, measured against the service and the minimal durable server.

They live here, not in the service, because the files they would change are being rewritten on
other branches (`storage/sqlite.py`, `http/observability.py`); docs/performance.md gives the
figures and the precise proposals. Each is the service built by its own factory with one part
swapped:

- `loop-store`: the SQLite writes run on the event loop, the requests of one turn in one
  `BEGIN IMMEDIATE … COMMIT`, instead of the writer thread;
- `one-step-log`: the access log line is built by one `orjson.dumps` and the lines of one turn
  are written to the log stream at once, instead of a `LogRecord` formatted per request;
- `both`: the two together.

    python -m bench.prototype [--rounds N] [--seconds S] loop-store one-step-log both
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

import bench.bench as harness
from ordercancel.config import Settings
from ordercancel.domain import Outcome
from ordercancel.http.app import admin_engine
from ordercancel.http.app import create_app as service_app
from ordercancel.http.core import App, Request, Response
from ordercancel.http.observability import ACCESS_LOGGER, AccessLog, Metrics
from ordercancel.storage import RememberedKeys, open_store
from ordercancel.storage.database import configure_sqlite, sqlite_timestamp
from ordercancel.storage.sqlite import SqliteStore, cancel_in_transaction
from ordercancel.storage.steps import Attempt, Store


class LoopStore(SqliteStore):
    """The SQLite store with its writes committed on the event loop, once per turn."""

    async def start(self) -> None:
        await super().start()
        self._on_loop = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        configure_sqlite(self._on_loop)
        self._turn: list[tuple[Attempt, str, asyncio.Future[Outcome]]] = []

    async def cancel(self, attempt: Attempt) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        if not self._turn:
            loop.call_soon(self._commit_turn)
        self._turn.append((attempt, sqlite_timestamp(self._clock()), future))
        return await future

    def _commit_turn(self) -> None:
        turn, self._turn = self._turn, []
        db = self._on_loop
        db.execute("BEGIN IMMEDIATE")
        outcomes = [cancel_in_transaction(db, attempt, now) for attempt, now, _ in turn]
        db.execute("COMMIT")
        for (_, _, future), outcome in zip(turn, outcomes, strict=True):
            if not future.cancelled():
                future.set_result(outcome)


class OneStepLog:
    """The access log line built in one step; the lines of one loop turn written together."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._log = logging.getLogger(ACCESS_LOGGER)
        self._lines: list[bytes] = []
        self._second, self._stamp = -1, ""

    def observe(self, request: Request, response: Response, elapsed: float) -> None:
        if not self._log.isEnabledFor(logging.INFO):
            return
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second, self._stamp = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        entry = {
            "time": f"{self._stamp}.{int((now - second) * 1000):03d}Z",
            "level": "info",
            "logger": ACCESS_LOGGER,
            "message": "request",
            "request_id": request.request_id,
            "method": request.method,
            "endpoint": self._metrics.endpoint(request.path),
            "status": response.status,
            "outcome": response.outcome,
            "latency_ms": round(elapsed * 1000, 3),
            "key_id": request.key_id,
            "client": request.client,
        }
        if not self._lines:
            asyncio.get_running_loop().call_soon(self._flush)
        self._lines.append(orjson.dumps(entry, option=orjson.OPT_APPEND_NEWLINE))

    def _flush(self) -> None:
        lines, self._lines = self._lines, []
        handler = cast(logging.StreamHandler[Any], logging.getLogger("ordercancel").handlers[0])
        handler.stream.write(b"".join(lines).decode())
        handler.stream.flush()


def one_step_log(app: App) -> App:
    """Swap the app's AccessLog observer for the one-step log."""
    observers: list[Any] = app._observers
    for i, observe in enumerate(observers):
        owner = getattr(observe, "__self__", None)
        if isinstance(owner, AccessLog):
            observers[i] = OneStepLog(owner._metrics).observe
    return app


def _loop_store(settings: Settings) -> Store:
    store = LoopStore(str(settings.sqlite_path()), settings.environment)
    return RememberedKeys(store, seconds=settings.key_cache_seconds)


def _app(store: Callable[[Settings], Store]) -> App:
    settings = Settings.from_env()
    return service_app(settings, store(settings), admin_engine(settings))


FACTORIES: dict[str, Callable[[], App]] = {
    "loop-store": lambda: _app(_loop_store),
    "one-step-log": lambda: one_step_log(_app(open_store)),
    "both": lambda: one_step_log(_app(_loop_store)),
}


def serve(name: str, port: int) -> None:
    """Run a prototype the way `ordercancel serve` runs the service (logging, protocol, uvloop)."""
    import uvicorn

    from ordercancel.http.observability import logging_config
    from ordercancel.http.protocol import BoundedHttpToolsProtocol

    uvicorn.run(
        FACTORIES[name],
        factory=True,
        host="127.0.0.1",
        port=port,
        access_log=False,
        server_header=False,
        log_level="warning",
        log_config=logging_config("INFO"),
        http=BoundedHttpToolsProtocol,
        loop="uvloop",
    )


def prototype_command(name: str) -> Callable[[int], list[str]]:
    """The command that serves a prototype on a port, in place of `ordercancel serve`."""
    return lambda port: [sys.executable, "-m", "bench.prototype", "serve", name, str(port)]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        serve(args[1], int(args[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("names", nargs="+", choices=sorted(FACTORIES))
    options = parser.parse_args(args)
    plan = harness.Plan(options.seconds, [200_000], options.rounds, 2.0, None, quick=True)
    work = Path(tempfile.mkdtemp(prefix="ordercancel-prototype-"))
    service_command = harness.serve_command
    runs: dict[str, list[harness.Result]] = {}
    try:
        seeded = harness.seed(work, "main", f"sqlite:///{work}/main.db", 200_000, "B", mix=False)
        for _ in range(options.rounds):
            for name in ["service", *options.names]:
                # The harness starts whatever serve_command returns: swapping it swaps the server.
                command = service_command if name == "service" else prototype_command(name)
                harness.serve_command = command  # type: ignore[assignment]
                url = harness.fresh_copy(seeded, work)
                runs.setdefault(name, []).append(harness.cancel_scenario(plan, name, seeded, url, "json"))
            runs.setdefault("minimal", []).append(harness.minimal_sqlite_anchor(plan, seeded, work))
    finally:
        harness.serve_command = service_command
        shutil.rmtree(work, ignore_errors=True)
    print("| server | runs | req/s | CPU us/req | p99 ms | db check |\n|---|---:|---:|---:|---:|---|")
    for name, results in runs.items():
        rps = statistics.median(r.rps for r in results)
        cpu = statistics.median(r.cpu_us or 0.0 for r in results)
        p99 = statistics.median(r.p99_ms for r in results)
        checks = ",".join(sorted({r.check for r in results}))
        print(f"| {name} | {len(results)} | {rps:,.0f} | {cpu:.1f} | {p99:.1f} | {checks} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
