"""The SQLite group-commit writer: every job answered by its deadline, whatever its batch does.

Real SQLite files throughout; the write lock "held elsewhere" is held by another process
(BEGIN IMMEDIATE in a child Python), the way an import or a second deployment would hold it.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from ordercancel.config import Environment, Settings
from ordercancel.domain import UnknownError
from ordercancel.storage import database, service
from ordercancel.storage.sqlite import GroupCommitWriter, Job, WriterStopped, is_lock_error
from tests.support.serving import ServeProcess
from tests.support.wire import BY_NUMBER

#: Seconds on top of the busy timeout within which every waiting job must be answered.
MARGIN = 1.0
#: Far beyond any answer we expect: a test never hangs, it fails.
PATIENCE = 60.0

HOLD_LOCK = """
import select, sqlite3, sys
connection = sqlite3.connect(sys.argv[1], isolation_level=None)
connection.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
select.select([sys.stdin], [], [], float(sys.argv[2]))  # until the test closes stdin, or the time is up
connection.execute("ROLLBACK")
"""


@contextmanager
def write_lock_held(path: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Hold SQLite's write lock in another process for `seconds` (or until the block ends)."""
    with subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path), str(seconds)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        assert holder.stdin is not None and holder.stdout is not None
        try:
            assert holder.stdout.readline().strip() == "locked"
            yield holder
        finally:
            holder.stdin.close()
            holder.wait(timeout=PATIENCE)


def released(holder: subprocess.Popen[str]) -> None:
    """Wait (bounded) until the lock holder has let go of the lock and exited."""
    assert holder.wait(timeout=PATIENCE) == 0


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A SQLite file in WAL mode with one table, `done`, that jobs write to."""
    path = tmp_path / "writer.db"
    with sqlite3.connect(path) as connection:
        database.configure_sqlite(connection)
        connection.execute("CREATE TABLE done (name TEXT PRIMARY KEY)")
    connection.close()
    return path


def names_in(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        names = {row[0] for row in connection.execute("SELECT name FROM done")}
    connection.close()
    return names


def insert(name: str) -> Job:
    def job(connection: sqlite3.Connection) -> object:
        connection.execute("INSERT INTO done (name) VALUES (?)", (name,))
        return name

    return job


def insert_then_fail(name: str) -> Job:
    """A job that writes, then fails: its write must not survive."""

    def job(connection: sqlite3.Connection) -> object:
        connection.execute("INSERT INTO done (name) VALUES (?)", (name,))
        raise ValueError(f"{name} failed after writing")

    return job


async def answer_of(future: asyncio.Future[object]) -> tuple[object, float]:
    """Wait (bounded) for a job's answer; return it (or its exception) and when it came."""
    try:
        result = await asyncio.wait_for(future, PATIENCE)
    except Exception as error:
        result = error
    return result, time.monotonic()


def test_a_failing_job_does_not_sink_the_others_in_its_batch(db_path: Path) -> None:
    runs: dict[str, int] = {}

    def counted(name: str, job: Job) -> Job:
        def run(connection: sqlite3.Connection) -> object:
            runs[name] = runs.get(name, 0) + 1
            return job(connection)

        return run

    async def scenario() -> list[object]:
        writer = GroupCommitWriter(str(db_path), busy_timeout=1.0)
        writer.start()
        try:
            # Submitted in one turn of the loop: one batch, one transaction.
            jobs = [insert("a"), insert_then_fail("b"), insert("c"), insert_then_fail("d"), insert("e")]
            futures = [writer.submit(counted(name, job)) for name, job in zip("abcde", jobs, strict=True)]
            return [answer for answer, _ in await asyncio.gather(*(answer_of(f) for f in futures))]
        finally:
            writer.stop()

    answers = asyncio.run(scenario())

    assert [answers[0], answers[2], answers[4]] == ["a", "c", "e"]
    assert isinstance(answers[1], ValueError) and "b failed" in str(answers[1])
    assert isinstance(answers[3], ValueError) and "d failed" in str(answers[3])
    assert names_in(db_path) == {"a", "c", "e"}  # the failed jobs' own writes were undone
    # Once one job has failed, each of the others runs in a savepoint: a second failure costs
    # nobody another run (nor another wait for the write lock).
    assert max(runs[name] for name in "ace") <= 2, runs


def test_a_write_lock_held_elsewhere_answers_every_job_within_the_busy_timeout(db_path: Path) -> None:
    busy_timeout = 1.0

    async def scenario() -> tuple[list[tuple[float, object, float]], object, float]:
        writer = GroupCommitWriter(str(db_path), busy_timeout=busy_timeout)
        writer.start()
        try:
            with write_lock_held(db_path, seconds=3 * busy_timeout) as holder:
                waits: list[asyncio.Task[tuple[object, float]]] = []
                sent: list[float] = []
                # Five in one batch, then one at a time: batches queue up behind one another.
                for wave in ([f"batch-{i}" for i in range(5)], *([f"single-{i}"] for i in range(5))):
                    for name in wave:
                        sent.append(time.monotonic())
                        waits.append(asyncio.ensure_future(answer_of(writer.submit(insert(name)))))
                    await asyncio.sleep(0.05)
                answered = [(at, *await task) for at, task in zip(sent, waits, strict=True)]
                await asyncio.to_thread(released, holder)
            after_release = time.monotonic()
            result, done = await answer_of(writer.submit(insert("after")))
            return answered, result, done - after_release
        finally:
            writer.stop()

    answered, after, after_seconds = asyncio.run(scenario())

    for sent_at, answer, answered_at in answered:
        assert isinstance(answer, sqlite3.OperationalError) and is_lock_error(answer)
        waited = answered_at - sent_at
        assert busy_timeout * 0.9 <= waited <= busy_timeout + MARGIN, waited
    assert after == "after"
    assert after_seconds <= busy_timeout + MARGIN  # not held up by what the lock made fail
    assert names_in(db_path) == {"after"}


def test_a_job_waiting_when_the_lock_is_released_succeeds(db_path: Path) -> None:
    async def scenario() -> tuple[object, float]:
        writer = GroupCommitWriter(str(db_path), busy_timeout=10.0)
        writer.start()
        try:
            with write_lock_held(db_path, seconds=1.0):
                started = time.monotonic()
                answer, answered_at = await answer_of(writer.submit(insert("patient")))
            return answer, answered_at - started
        finally:
            writer.stop()

    answer, waited = asyncio.run(scenario())

    assert answer == "patient"
    assert waited < 10.0  # it went through when the lock came free, not when its time ran out
    assert names_in(db_path) == {"patient"}


def test_stopping_the_writer_answers_every_queued_job(db_path: Path) -> None:
    async def scenario() -> tuple[list[object], list[object], BaseException | None]:
        writer = GroupCommitWriter(str(db_path), busy_timeout=1.0)
        writer.start()
        with write_lock_held(db_path, seconds=PATIENCE):
            stuck = [writer.submit(insert("stuck-0"))]
            await asyncio.sleep(0.05)  # the writer is now waiting for the lock with it
            stuck += [writer.submit(insert(f"stuck-{i}")) for i in (1, 2)]
            await asyncio.sleep(0)  # handed over: queued behind the first batch
            stuck.append(writer.submit(insert("stuck-3")))  # not yet handed over
            writer.stop()
        refused: BaseException | None = None
        try:
            writer.submit(insert("late"))
        except WriterStopped as error:
            refused = error
        answers = [answer for answer, _ in await asyncio.gather(*(answer_of(f) for f in stuck))]
        return answers, [f.done() for f in stuck], refused

    answers, done, refused = asyncio.run(scenario())

    assert all(done)
    assert all(isinstance(answer, sqlite3.OperationalError) and is_lock_error(answer) for answer in answers)
    assert isinstance(refused, WriterStopped)
    assert names_in(db_path) == set()


def test_stopping_the_writer_commits_what_was_submitted_this_turn(db_path: Path) -> None:
    async def scenario() -> list[object]:
        writer = GroupCommitWriter(str(db_path), busy_timeout=1.0)
        writer.start()
        futures = [writer.submit(insert(name)) for name in ("x", "y")]
        writer.stop()  # in the same turn: the jobs have not reached the thread yet
        return [answer for answer, _ in await asyncio.gather(*(answer_of(f) for f in futures))]

    assert asyncio.run(scenario()) == ["x", "y"]
    assert names_in(db_path) == {"x", "y"}


def test_the_busy_timeout_is_read_from_the_environment() -> None:
    assert Settings.from_env({"ORDERCANCEL_SQLITE_BUSY_TIMEOUT": "2.5"}).sqlite_busy_timeout == 2.5
    assert Settings.from_env({}).sqlite_busy_timeout == database.SQLITE_BUSY_TIMEOUT == 10.0
    with pytest.raises(ValueError, match="ORDERCANCEL_SQLITE_BUSY_TIMEOUT"):
        Settings.from_env({"ORDERCANCEL_SQLITE_BUSY_TIMEOUT": "-1"})


# Over real HTTP: `ordercancel serve` with the lock held by another process --------------------

CONCURRENT = 20


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("lock_seconds", "busy_timeout"),
    [(3.0, 1.0), pytest.param(30.0, 10.0, marks=pytest.mark.slow, id="30s-lock-10s-timeout")],
)
def test_concurrent_cancellations_behind_a_held_lock_are_all_answered_500_within_the_busy_timeout(
    migrated_sqlite: Path, tmp_path: Path, lock_seconds: float, busy_timeout: float
) -> None:
    path = tmp_path / "ordercancel.db"
    shutil.copy(migrated_sqlite, path)
    settings = Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX)
    engine = database.create_sync_engine(settings)
    api_code = service.create_key(engine, settings.environment, "test")
    numbers = [service.create_order(engine, settings.environment, api_code).order_number for _ in range(CONCURRENT + 1)]
    engine.dispose()
    env = {"ORDERCANCEL_SQLITE_BUSY_TIMEOUT": str(busy_timeout)}
    with ServeProcess(settings.database_url, tmp_path / "serve.log", env=env) as server:
        clients = [server.client(timeout=PATIENCE) for _ in range(CONCURRENT + 1)]
        try:
            for client in clients:  # connected before the clock starts
                assert client.get("/healthz").status_code == 200
            answers: list[tuple[httpx.Response, float]] = [None] * CONCURRENT  # type: ignore[list-item]
            start = threading.Barrier(CONCURRENT)

            def cancel(index: int) -> None:
                start.wait(timeout=PATIENCE)
                sent = time.monotonic()
                response = cancel_by_number(clients[index], api_code, numbers[index])
                answers[index] = (response, time.monotonic() - sent)

            with write_lock_held(path, seconds=lock_seconds) as holder:
                threads = [threading.Thread(target=cancel, args=(i,)) for i in range(CONCURRENT)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(timeout=PATIENCE)
                released(holder)
            after = cancel_by_number(clients[CONCURRENT], api_code, numbers[CONCURRENT])
        finally:
            for client in clients:
                client.close()

    for response, seconds in answers:
        assert response.status_code == 500
        assert response.json() == {
            "isCanceled": False,
            "requestError": {"code": UnknownError.code, "message": UnknownError.message},
        }
        assert seconds <= busy_timeout + MARGIN, seconds  # each its own busy timeout, not one after another
    assert after.status_code == 200
    assert after.json()["isCanceled"] is True
    with sqlite3.connect(path) as connection:
        cancelled = {row[0] for row in connection.execute("SELECT order_number FROM orders WHERE status='Cancelled'")}
    connection.close()
    assert cancelled == {numbers[CONCURRENT]}  # the refused ones changed nothing


def cancel_by_number(client: httpx.Client, api_code: str, number: str) -> httpx.Response:
    return client.post(
        BY_NUMBER,
        json={"orderNumber": number},
        headers={"apiCode": api_code, "Accept": "application/json"},
    )
