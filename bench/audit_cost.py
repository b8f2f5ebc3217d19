"""What the audit row costs, written by the UPDATE's trigger (today) or as a second statement (before).

Seeds a database with the CLI, then runs the same durable cancellations three ways on a fresh
copy each, 64 to a commit (`synchronous=FULL`), and prints the CPU per cancellation:

- today: the shared steps as SQLite runs them (`cancel_in_transaction`): the conditional UPDATE
  sets `cancel_request_id`, and the trigger of migration 0007 inserts the success's audit row in
  the same statement;
- two statements: the same steps as before 0007 (and as PostgreSQL's steps still are): the
  conditional UPDATE, then the audit INSERT from Python;
- update only: the UPDATE alone, as the minimal durable server does (no audit: not an option).

    python -m bench.audit_cost [--orders N] [--rounds R]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import bench.bench as harness
from ordercancel.storage.steps import Statements

BATCH = 64


#: The statements as before migration 0007: the plain UPDATE (which leaves the trigger quiet), then the INSERT.
TWO_STATEMENTS = Statements.build()


Variant = Callable[[sqlite3.Connection, int, str, str, str], bool]


def today(db: sqlite3.Connection, key: int, number: str, request_id: str, now: str) -> bool:
    from ordercancel.domain import Lookup
    from ordercancel.storage.sqlite import cancel_in_transaction
    from ordercancel.storage.steps import Attempt

    return cancel_in_transaction(db, Attempt(key, request_id, Lookup(False, number)), now).is_canceled


def two_statements(db: sqlite3.Connection, key: int, number: str, request_id: str, now: str) -> bool:
    from ordercancel.domain import Lookup
    from ordercancel.storage.steps import Attempt, cancellation_steps

    steps = cancellation_steps(Attempt(key, request_id, Lookup(False, number)), now, TWO_STATEMENTS)
    row = None
    try:
        while True:
            step = steps.send(row)
            row = db.execute(step.statement, step.params).fetchone()
    except StopIteration as done:
        return bool(done.value.is_canceled)


def update_only(db: sqlite3.Connection, key: int, number: str, request_id: str, now: str) -> bool:
    params = {"now": now, "key": key, "request_id": request_id, "value": number, "reason": None, "note": None}
    params["placed_after"] = None  # no cancellation window
    return db.execute(TWO_STATEMENTS.cancel_by_number, params).fetchone() is not None


def run(path: Path, variant: Variant, count: int) -> tuple[float, int, int]:
    """Cancel `count` orders, 64 to a durable commit; return CPU us per cancellation and the row counts."""
    from ordercancel.storage.database import configure_sqlite, sqlite_timestamp, utcnow

    db = sqlite3.connect(path, isolation_level=None)
    configure_sqlite(db)
    key = db.execute("SELECT id FROM api_keys ORDER BY id LIMIT 1").fetchone()[0]
    numbers = [f"B{i:0{harness.WIDTH}d}" for i in range(count)]
    started = time.process_time()
    for first in range(0, count, BATCH):
        db.execute("BEGIN IMMEDIATE")
        now = sqlite_timestamp(utcnow())
        for i in range(first, min(first + BATCH, count)):
            variant(db, key, numbers[i], f"bench-{i}", now)
        db.execute("COMMIT")
    cpu = time.process_time() - started
    cancelled = db.execute("SELECT count(*) FROM orders WHERE status = 'Cancelled'").fetchone()[0]
    audited = db.execute("SELECT count(*) FROM cancellation_attempts").fetchone()[0]
    db.close()
    return cpu / count * 1e6, cancelled, audited


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ordercancel-audit-"))
    try:
        seeded = harness.seed(work, "seed", f"sqlite:///{work}/seed.db", options.orders, "B", mix=False)
        variants: dict[str, Variant] = {"today": today, "two statements": two_statements, "update only": update_only}
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(options.rounds):
            for name, variant in variants.items():
                copy = work / "run.db"
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{copy}{suffix}").unlink(missing_ok=True)
                shutil.copyfile(seeded.path, copy)
                us, cancelled, audited = run(copy, variant, options.orders)
                assert cancelled == options.orders, (name, cancelled)
                assert audited == (0 if variant is update_only else options.orders), (name, audited)
                cpu[name].append(us)
        for name, values in cpu.items():
            print(f"{name:14} {statistics.median(values):6.1f} us CPU per cancellation (runs {values})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
