"""The hot path on SQLite: reads on the event loop's thread, writes by group commit on one thread."""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from typing import cast

from ordercancel.config import Environment
from ordercancel.domain import Outcome
from ordercancel.storage.database import configure_sqlite, sqlite_timestamp, utcnow
from ordercancel.storage.steps import SQLITE_STATEMENTS, Attempt, Caller, Clock, caller, cancellation_steps


def cancel_in_transaction(connection: sqlite3.Connection, attempt: Attempt, now: str) -> Outcome:
    """Run one cancellation attempt inside the caller's open transaction."""
    steps = cancellation_steps(attempt, now)
    row: Sequence[object] | None = None
    try:
        while True:
            step = steps.send(row)
            row = connection.execute(step.statement, step.params).fetchone()
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome


Job = Callable[[sqlite3.Connection], object]
_Entry = tuple[Job, "asyncio.Future[object]", asyncio.AbstractEventLoop]
_STOP = object()
#: Most attempts committed together (give or take one turn's worth); more wait for the next commit.
MAX_BATCH = 256


class _GroupCommitWriter:
    """One thread that owns the write connection and commits whatever has queued up at once.

    Every request waits for the commit that contains its change (fsync, synchronous=FULL), so
    an acknowledged cancellation is durable; requests that arrive while a commit is under way
    share the next one, which is what makes durable commits affordable.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        #: Jobs submitted during this turn of the event loop, handed to the thread together.
        self._pending: list[_Entry] = []
        self._thread = threading.Thread(target=self._run, name="ordercancel-writer", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def submit(self, job: Job) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append((job, future, loop))
        return future

    def _hand_over(self) -> None:
        # Once per event-loop turn, not once per request: every put wakes the writer thread,
        # which then fights the event loop for the GIL on the same core.
        pending, self._pending = self._pending, []
        self._queue.put(pending)

    def stop(self) -> None:
        if self._pending:  # submitted this very turn: commit them before stopping, not never
            self._hand_over()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            configure_sqlite(connection)
        except BaseException as error:  # handed to start(), which raises it in the caller
            self._failure = error
            self._ready.set()
            return
        self._ready.set()
        try:
            while (batch := self._next_batch()) is not None:
                results = self._commit(connection, [job for job, _, _ in batch])
                settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[object], object]]] = {}
                for (_, future, loop), result in zip(batch, results, strict=True):
                    settled.setdefault(loop, []).append((future, result))
                for loop, outcomes in settled.items():  # one wake-up of each loop per commit
                    loop.call_soon_threadsafe(_settle_all, outcomes)
        finally:
            connection.close()

    def _next_batch(self) -> list[_Entry] | None:
        item = self._queue.get()
        if item is _STOP:
            return None
        batch = list(cast(list[_Entry], item))
        while len(batch) < MAX_BATCH:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                self._queue.put(_STOP)  # finish this batch, stop at the next
                break
            batch.extend(cast(list[_Entry], item))
        return batch

    def _commit(self, connection: sqlite3.Connection, jobs: list[Job]) -> list[object]:
        """Run the jobs in one transaction; if it fails, run each alone so one cannot sink all."""
        try:
            connection.execute("BEGIN IMMEDIATE")
            results = [job(connection) for job in jobs]
            connection.execute("COMMIT")
            return results
        except Exception as error:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            if len(jobs) == 1:
                return [error]
            return [self._commit(connection, [job])[0] for job in jobs]


def _settle_all(outcomes: list[tuple[asyncio.Future[object], object]]) -> None:
    for future, result in outcomes:
        if future.cancelled():
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class SqliteStore:
    """The hot path on SQLite: reads on the event loop's thread, writes by group commit."""

    def __init__(self, path: str, environment: Environment, *, clock: Clock = utcnow) -> None:
        self._path = path
        self._environment = environment.value
        self._clock = clock
        self._reader: sqlite3.Connection | None = None
        self._writer = _GroupCommitWriter(path)

    async def start(self) -> None:
        # A read on an indexed key costs microseconds: cheaper inline than a hop to a thread.
        self._reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        configure_sqlite(self._reader)
        self._writer.start()

    async def close(self) -> None:
        self._writer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("the store has not been started")
        return self._reader

    async def ping(self) -> None:
        self._read().execute("SELECT 1 FROM api_keys LIMIT 1").fetchall()
        if not self._writer.alive():
            raise RuntimeError("the SQLite writer has stopped")

    async def authenticate(self, code_hash: str) -> Caller | None:
        params = {"hash": code_hash, "environment": self._environment}
        row = self._read().execute(SQLITE_STATEMENTS.authenticate, params).fetchone()
        return caller(row)

    async def cancel(self, attempt: Attempt) -> Outcome:
        now = sqlite_timestamp(self._clock())
        result = await self._writer.submit(lambda c: cancel_in_transaction(c, attempt, now))
        assert isinstance(result, Outcome)
        return result
