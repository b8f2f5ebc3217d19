"""The hot path on SQLite: reads on the event loop's thread, writes by group commit on one thread."""

from __future__ import annotations

import asyncio
import contextlib
import math
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import cast

from ordercancel.config import Environment
from ordercancel.domain import Outcome, window_cutoff
from ordercancel.storage.database import SQLITE_BUSY_TIMEOUT, configure_sqlite, sqlite_timestamp, utcnow
from ordercancel.storage.steps import SQLITE_STATEMENTS, Attempt, Caller, Clock, caller, cancellation_steps


def cancel_in_transaction(
    connection: sqlite3.Connection,
    attempt: Attempt,
    now: str,
    expires: str | None = None,
    placed_after: str | None = None,
) -> Outcome:
    """Run one cancellation attempt inside the caller's open transaction."""
    steps = cancellation_steps(attempt, now, expires=expires, placed_after=placed_after)
    row: Sequence[object] | None = None
    try:
        while True:
            step = steps.send(row)
            row = connection.execute(step.statement, step.params).fetchone()
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome


Job = Callable[[sqlite3.Connection], object]
#: A submitted job, the future that answers it, that future's loop, and the time.monotonic()
#: after which a refused write lock answers it with the refusal instead of trying again.
_Entry = tuple[Job, "asyncio.Future[object]", asyncio.AbstractEventLoop, float]
_STOP = object()
#: Most attempts committed together (give or take one turn's worth); more wait for the next commit.
MAX_BATCH = 256
#: Pause after the write lock was refused before anyone's time was up, so that a refusal
#: SQLite gives without waiting (it does for some deadlocks) is not retried in a busy loop.
_RETRY_PAUSE = 0.01
#: How long stop() waits for the thread beyond the busy timeout (the last batch's bound).
_STOP_GRACE = 5.0
#: SQLite's primary result codes for "another connection holds the lock".
_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


class WriterStopped(RuntimeError):
    """The SQLite writer thread is not running, so a write cannot be committed."""

    def __init__(self) -> None:
        super().__init__("the SQLite writer has stopped")


class _JobFailed(Exception):
    """One job failed and the transaction it ran in had to be abandoned."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(index, error)
        self.index = index
        self.error = error


def is_lock_error(error: BaseException) -> bool:
    """Tell whether SQLite refused because another connection holds the lock it needs."""
    code = getattr(error, "sqlite_errorcode", None)
    return isinstance(error, sqlite3.OperationalError) and code is not None and code & 0xFF in _LOCK_CODES


class GroupCommitWriter:
    """One thread that owns the write connection and commits whatever has queued up at once.

    Every request waits for the commit that contains its change (fsync, synchronous=FULL), so
    an acknowledged cancellation is durable; requests that arrive while a commit is under way
    share the next one, which is what makes durable commits affordable.

    Each request is answered by its own deadline, the busy timeout after it was submitted,
    whatever its batch does: a refused write lock answers the requests whose time is up with
    the refusal (and tries again for the others, no longer than the next deadline), and a job
    that fails answers only its own request.
    """

    def __init__(self, path: str, *, busy_timeout: float = SQLITE_BUSY_TIMEOUT) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        #: Jobs submitted during this turn of the event loop, handed to the thread together.
        self._pending: list[_Entry] = []
        self._thread = threading.Thread(target=self._run, name="ordercancel-writer", daemon=True)
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        #: Set once no more jobs will be run: by stop(), or by the thread as it ends.
        self._closed = False

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._failure is not None:
            raise self._failure

    def submit(self, job: Job) -> asyncio.Future[object]:
        if self._closed:
            raise WriterStopped
        loop = asyncio.get_running_loop()
        future: asyncio.Future[object] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._hand_over)
        self._pending.append((job, future, loop, time.monotonic() + self._busy_timeout))
        return future

    def _hand_over(self) -> None:
        # Once per event-loop turn, not once per request: every put wakes the writer thread,
        # which then fights the event loop for the GIL on the same core.
        pending, self._pending = self._pending, []
        self._queue.put(pending)
        if self._closed:  # the thread has ended (or is ending): nobody else will answer these
            self._fail_queued()

    def stop(self) -> None:
        """Commit what was submitted so far, stop the thread, and refuse what comes later."""
        if self._pending:  # submitted this very turn: commit them before stopping, not never
            self._hand_over()
        self._closed = True
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout=self._busy_timeout + _STOP_GRACE)
        self._fail_queued()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _fail_queued(self) -> None:
        """Answer every job still queued with WriterStopped, so that no future waits forever."""
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                _answer([(entry, WriterStopped()) for entry in cast(list[_Entry], item)])
        if self._thread.is_alive():  # stuck past its bound: let it stop when it comes back
            self._queue.put(_STOP)

    def _run(self) -> None:
        try:
            connection = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
            configure_sqlite(connection, busy_timeout=self._busy_timeout)
        except BaseException as error:  # handed to start(), which raises it in the caller
            self._failure = error
            self._closed = True
            self._ready.set()
            return
        self._ready.set()
        try:
            while (batch := self._next_batch()) is not None:
                self._commit(connection, batch)
        finally:
            self._closed = True  # before the drain: a hand-over after it sees the flag and drains itself
            connection.close()
            self._fail_queued()

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

    def _commit(self, connection: sqlite3.Connection, batch: list[_Entry]) -> None:
        """Commit the batch's jobs in one transaction, answering each job by its deadline."""
        pending = batch
        # Savepoints cost a few microseconds a job, so they are taken only once a job has failed.
        guarded = False
        try:
            while pending:
                try:
                    results = self._attempt(connection, pending, guarded)
                except _JobFailed as failed:  # answer that one; the others try again, each in a savepoint
                    _answer([(pending[failed.index], failed.error)])
                    pending = pending[: failed.index] + pending[failed.index + 1 :]
                    guarded = True
                    continue
                except sqlite3.OperationalError as error:
                    if not is_lock_error(error):
                        raise
                    pending = _expire(pending, error)
                    continue
                _answer(list(zip(pending, results, strict=True)))
                return
        except BaseException as error:  # nothing a retry could mend (a full disk, a broken file)
            _answer([(entry, error) for entry in pending])
            if not isinstance(error, Exception):
                raise

    def _attempt(self, connection: sqlite3.Connection, entries: list[_Entry], guarded: bool) -> list[object]:
        """Run the jobs in one transaction, waiting for the write lock until the first deadline."""
        budget = min(deadline for _, _, _, deadline in entries) - time.monotonic()
        connection.execute(f"PRAGMA busy_timeout = {max(0, math.ceil(budget * 1000))}")
        try:
            connection.execute("BEGIN IMMEDIATE")
            results = _run_jobs(connection, entries, guarded)
            connection.execute("COMMIT")
            return results
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise


def _run_jobs(connection: sqlite3.Connection, entries: list[_Entry], guarded: bool) -> list[object]:
    """Run the jobs in the open transaction; guarded, each in a savepoint that its failure undoes."""
    results: list[object] = []
    if not guarded:  # the usual case, kept to the bare loop: it runs for every request
        try:
            for job, _, _, _ in entries:
                results.append(job(connection))
        except Exception as error:
            if is_lock_error(error):
                raise  # the whole attempt waits for the lock again
            raise _JobFailed(len(results), error) from error
        return results
    for index, (job, _, _, _) in enumerate(entries):
        connection.execute("SAVEPOINT job")
        try:
            results.append(job(connection))
        except Exception as error:
            if is_lock_error(error):
                raise
            if not _undo_job(connection):
                raise _JobFailed(index, error) from error
            results.append(error)
            continue
        connection.execute("RELEASE job")
    return results


def _undo_job(connection: sqlite3.Connection) -> bool:
    """Roll back to the job's savepoint; False when the transaction itself is gone."""
    if not connection.in_transaction:  # SQLite rolled it all back itself (some I/O errors do)
        return False
    try:
        connection.execute("ROLLBACK TO job")
        connection.execute("RELEASE job")
    except sqlite3.Error:
        return False
    return True


def _expire(pending: list[_Entry], error: Exception) -> list[_Entry]:
    """Answer the entries whose deadline has passed with the lock's refusal; return the others."""
    now = time.monotonic()
    due = [entry for entry in pending if entry[3] <= now]
    if not due:
        time.sleep(min(_RETRY_PAUSE, max(0.0, min(entry[3] for entry in pending) - now)))
        return pending
    _answer([(entry, error) for entry in due])
    return [entry for entry in pending if entry[3] > now]


def _answer(answers: list[tuple[_Entry, object]]) -> None:
    """Settle the futures on their own loops, one wake-up of each loop for all of its answers."""
    settled: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[object], object]]] = {}
    for (_, future, loop, _), result in answers:
        settled.setdefault(loop, []).append((future, result))
    for loop, outcomes in settled.items():
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting for these any more
            loop.call_soon_threadsafe(_settle_all, outcomes)


def _settle_all(outcomes: list[tuple[asyncio.Future[object], object]]) -> None:
    for future, result in outcomes:
        if future.done():  # cancelled by its request, or already answered
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class SqliteStore:
    """The hot path on SQLite: reads on the event loop's thread, writes by group commit."""

    def __init__(
        self,
        path: str,
        environment: Environment,
        *,
        clock: Clock = utcnow,
        busy_timeout: float = SQLITE_BUSY_TIMEOUT,
        idempotency_ttl: float = 86400.0,
    ) -> None:
        self._path = path
        self._environment = environment.value
        self._clock = clock
        self._idempotency_ttl = timedelta(seconds=idempotency_ttl)
        self._busy_timeout = busy_timeout
        self._reader: sqlite3.Connection | None = None
        self._writer = GroupCommitWriter(path, busy_timeout=busy_timeout)

    async def start(self) -> None:
        # A read on an indexed key costs microseconds: cheaper inline than a hop to a thread.
        self._reader = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        configure_sqlite(self._reader, busy_timeout=self._busy_timeout)
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
            raise WriterStopped

    async def authenticate(self, code_hash: str) -> Caller | None:
        params = {"hash": code_hash, "environment": self._environment}
        row = self._read().execute(SQLITE_STATEMENTS.authenticate, params).fetchone()
        return caller(row)

    async def cancel(self, attempt: Attempt) -> Outcome:
        at = self._clock()
        now = sqlite_timestamp(at)
        expires = None if attempt.idempotency_key is None else sqlite_timestamp(at + self._idempotency_ttl)
        cutoff = window_cutoff(at, attempt.window)
        # The same text form as every stored timestamp: the window is compared like with like.
        placed_after = None if cutoff is None else sqlite_timestamp(cutoff)
        result = await self._writer.submit(lambda c: cancel_in_transaction(c, attempt, now, expires, placed_after))
        assert isinstance(result, Outcome)
        return result

    async def prune(self, limit: int) -> int:
        params = {"now": sqlite_timestamp(self._clock()), "limit": limit}
        result = await self._writer.submit(lambda c: c.execute(SQLITE_STATEMENTS.prune_keys, params).rowcount)
        assert isinstance(result, int)
        return result
