"""The cancellation hot path: authenticate an API code, cancel an order, record the attempt.

SQLite here; PostgreSQL in `postgres.py`, running the same statements. Both keep the
contract's promise that the check and the change are one step: the success path is a single
conditional UPDATE, and only when it changes nothing does a second statement, in the same
transaction, find out why.
"""

from __future__ import annotations

import asyncio
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol, cast

from ordercancel.config import Environment, Settings
from ordercancel.database import configure_sqlite, sqlite_timestamp, utcnow
from ordercancel.domain import (
    OPEN_STATUSES,
    Lookup,
    Order,
    Outcome,
    PaymentStatus,
    ProcessingStarted,
    ProductionStatus,
    RequestError,
    Unauthorized,
    cancellation_refusal,
)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One authenticated cancellation request, as the store sees it."""

    key_id: int
    request_id: str
    #: The order the body names, or the error that made the body unusable.
    target: Lookup | RequestError
    #: The order number to echo when the order is not found (by-number requests only).
    echo: str | None = None


class Store(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the database answers."""

    async def authenticate(self, code_hash: str) -> int | None:
        """Return the id of the active API key with this hash in our environment, or None."""

    async def cancel(self, attempt: Attempt) -> Outcome:
        """Cancel the order if the rules allow, record the attempt, and say what happened."""


_OPEN = ", ".join(f"'{status.value}'" for status in sorted(OPEN_STATUSES))
_KEY_ACTIVE = "EXISTS (SELECT 1 FROM api_keys WHERE id = :key AND revoked_at IS NULL)"


def cancel_statement(column: str, param: str = ":value") -> str:
    """The single conditional write that cancels an order when, and only when, the rules allow."""
    return (
        f"UPDATE orders SET status = '{ProductionStatus.CANCELLED.value}', cancelled_at = :now "
        f"WHERE {column} = {param} AND api_key_id = :key AND status IN ({_OPEN}) "
        f"AND payment_status <> '{PaymentStatus.NOK.value}' AND engineer IS NULL "
        f"AND {_KEY_ACTIVE} RETURNING id, order_id, order_number"
    )


def explain_statement(column: str, param: str = ":value") -> str:
    """Read what a refused cancellation needs to say why: the key, and the order if it is ours."""
    return (
        "SELECT k.revoked_at, o.id, o.order_id, o.order_number, o.status, o.payment_status, "
        f"o.engineer FROM api_keys k LEFT JOIN orders o ON o.{column} = {param} "
        "AND o.api_key_id = k.id WHERE k.id = :key"
    )


def cancel_and_record_statement(column: str, param: str = ":value") -> str:
    """The success path as one statement (PostgreSQL only): cancel, and record the success with it."""
    return (
        f"WITH cancelled AS ({cancel_statement(column, param)}), recorded AS ("
        "INSERT INTO cancellation_attempts (at, api_key_id, order_ref, outcome, request_id) "
        "SELECT :now, :key, id, 0, :request_id FROM cancelled) "
        "SELECT id, order_id, order_number FROM cancelled"
    )


RECORD_ATTEMPT = (
    "INSERT INTO cancellation_attempts (at, api_key_id, order_ref, outcome, request_id) "
    "VALUES (:now, :key, :ref, :outcome, :request_id)"
)
AUTHENTICATE = "SELECT id FROM api_keys WHERE code_hash = :hash AND environment = :environment AND revoked_at IS NULL"


def refusal_outcome(lookup: Lookup, echo: str | None, row: Sequence[object] | None) -> tuple[int | None, Outcome]:
    """Turn the explain row of a refused cancellation into its outcome and the order's row id.

    A row whose order turns out to be cancellable (a claim was released in between) yields
    an outcome with no error: the caller tries the cancellation again.
    """
    if row is None or row[0] is not None:
        return None, Outcome(None, None, Unauthorized())
    if row[1] is None:
        return None, Outcome(None, echo, lookup.not_found)
    ref, order_id, number, status, payment, engineer = row[1:]
    order = Order(
        str(order_id),
        str(number),
        ProductionStatus(str(status)),
        PaymentStatus(str(payment)),
        None if engineer is None else str(engineer),
    )
    return int(str(ref)), Outcome(order.order_id, order.order_number, cancellation_refusal(order))


@dataclass(frozen=True, slots=True)
class Statements:
    """The hot path's SQL in one placeholder style (SQLite's :name, or psycopg's %(name)s)."""

    cancel_by_number: str
    explain_by_number: str
    cancel_by_id: str
    explain_by_id: str
    record_attempt: str
    authenticate: str

    @classmethod
    def build(cls, style: Callable[[str], str] = lambda sql: sql) -> Statements:
        return cls(
            style(cancel_statement("order_number")),
            style(explain_statement("order_number")),
            style(cancel_statement("order_id")),
            style(explain_statement("order_id")),
            style(RECORD_ATTEMPT),
            style(AUTHENTICATE),
        )


SQLITE_STATEMENTS = Statements.build()
#: How often a cancellation is retried when the order became cancellable while it was refused.
RETRIES = 3


class Step(NamedTuple):
    """One statement to run; when it reads, the driver sends back its first row (or None)."""

    statement: str
    params: dict[str, object]
    reads: bool = True


Steps = Generator[Step, Sequence[object] | None, Outcome]


def cancellation_steps(attempt: Attempt, now: object, statements: Statements = SQLITE_STATEMENTS) -> Steps:
    """Yield the statements of one cancellation attempt, to run in one transaction; return its outcome.

    The logic lives here once, free of I/O: SQLite runs the steps on its writer thread,
    PostgreSQL awaits them on a pooled connection.
    """
    params: dict[str, object] = {"now": now, "key": attempt.key_id, "request_id": attempt.request_id}
    target = attempt.target
    if isinstance(target, RequestError):
        outcome, ref = Outcome(None, attempt.echo, target), None
    else:
        if target.by_id:
            cancel, explain = statements.cancel_by_id, statements.explain_by_id
        else:
            cancel, explain = statements.cancel_by_number, statements.explain_by_number
        params["value"] = target.value
        for _ in range(RETRIES):
            row = yield Step(cancel, params)
            if row is not None:
                ref, outcome = int(str(row[0])), Outcome(str(row[1]), str(row[2]))
                break
            ref, outcome = refusal_outcome(target, attempt.echo, (yield Step(explain, params)))
            if outcome.error is not None:
                break
        else:  # the order kept changing under us (claims released and taken again): say so
            outcome = Outcome(outcome.order_id, outcome.order_number, ProcessingStarted())
    if not isinstance(outcome.error, Unauthorized):
        params.update(ref=ref, outcome=outcome.error.code if outcome.error else 0)
        yield Step(statements.record_attempt, params, reads=False)
    return outcome


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

    async def authenticate(self, code_hash: str) -> int | None:
        params = {"hash": code_hash, "environment": self._environment}
        row = self._read().execute(SQLITE_STATEMENTS.authenticate, params).fetchone()
        return None if row is None else int(row[0])

    async def cancel(self, attempt: Attempt) -> Outcome:
        now = sqlite_timestamp(self._clock())
        result = await self._writer.submit(lambda c: cancel_in_transaction(c, attempt, now))
        assert isinstance(result, Outcome)
        return result


class RememberedKeys:
    """A store that remembers for a few seconds which API-code hashes belong to an active key.

    The look-up before the body is read is then a dict access instead of a database round trip
    (on PostgreSQL, one of the two a cancellation needs). It is only ever a hint: every
    cancellation checks again, in its own conditional statement, that the key is active, so a
    key revoked a moment ago still cannot cancel anything: its requests are answered 401 by that
    check. Unknown codes are never remembered, so strangers cannot fill the memory.
    """

    def __init__(
        self, store: Store, *, seconds: float, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._seconds = seconds
        self._capacity = capacity
        self._clock = clock
        self._known: dict[str, tuple[int, float]] = {}

    async def start(self) -> None:
        await self._store.start()

    async def close(self) -> None:
        await self._store.close()

    async def ping(self) -> None:
        await self._store.ping()

    async def cancel(self, attempt: Attempt) -> Outcome:
        return await self._store.cancel(attempt)

    async def authenticate(self, code_hash: str) -> int | None:
        now = self._clock()
        known = self._known.get(code_hash)
        if known is not None and known[1] > now:
            return known[0]
        key_id = await self._store.authenticate(code_hash)
        if key_id is None:
            self._known.pop(code_hash, None)
            return None
        if len(self._known) >= self._capacity:
            self._known.clear()  # rare (that many active keys in a few seconds): start afresh
        self._known[code_hash] = (key_id, now + self._seconds)
        return key_id


def open_store(settings: Settings) -> Store:
    """Build the store the database URL names (not yet started)."""
    store: Store
    if settings.is_postgres:
        from ordercancel.postgres import PostgresStore  # psycopg is loaded only when it is used

        store = PostgresStore(settings.database_url, settings.environment, pool_size=settings.pool_size)
    else:
        path = settings.sqlite_path()
        if path is None:
            raise ValueError(f"no store for the database URL {settings.database_url!r}")
        store = SqliteStore(str(path), settings.environment)
    if settings.key_cache_seconds > 0:
        store = RememberedKeys(store, seconds=settings.key_cache_seconds)
    return store
