"""What forgetting expired Idempotency-Keys costs the requests that share SQLite's writer with it.

The service's Sweeper (http/idempotency.py) deletes at most SWEEP_LIMIT expired keys per
statement, up to SWEEP_BATCHES statements a sweep, once every SWEEP_EVERY seconds. Each
statement is one job of the group-commit writer, so the cancellations committed in the same
batch wait for it: this measures that wait, two ways.

    python bench/sweep_cost.py [--keys 200000] [--load] [--seconds 4]

1. One prune statement on a writer connection (synchronous=FULL) of a database holding --keys
   expired keys: the statement alone and with its commit, for a few batch sizes.
2. --load: `ordercancel serve` under wrk (as `make bench` runs it, JSON, all succeed) on a
   database holding --keys expired keys, once with no sweep during the run and once sweeping
   back to back (a sweep every 0.5 s instead of every 60 s: far more than the service does);
   the p99 of both, and the keys forgotten during the run.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: `bench` is the directory beside this one
    sys.path.insert(0, str(ROOT))

from bench.bench import (  # noqa: E402
    BIN,
    WIDTH,
    Plan,
    cpu_seconds,
    free_port,
    load,
    result_from,
    run,
    seed,
    service_env,
    serving,
    wrk_seconds,
)

#: How often each batch size is timed.
REPEATS = 20


def fill_expired_keys(path: Path, count: int) -> None:
    """Add `count` keys that expired a day ago, as the service stores them, for the first API key."""
    from ordercancel.storage.database import sqlite_timestamp, utcnow

    created = utcnow() - timedelta(days=2)
    with sqlite3.connect(path) as db:
        key_id = db.execute("SELECT id FROM api_keys ORDER BY id LIMIT 1").fetchone()[0]
        # Spread over the day, as a day of traffic leaves them: the sweep takes the oldest first.
        rows = (
            (
                key_id,
                f"{i:08x}-5dbd-4c94-bfa2-b57c19bcaa07",
                "0" * 64,
                0,
                sqlite_timestamp(created + timedelta(seconds=i * 86_400 / count)),
                sqlite_timestamp(created + timedelta(days=1, seconds=i * 86_400 / count)),
            )
            for i in range(count)
        )
        db.executemany(
            "INSERT INTO idempotency_keys (api_key_id, key, fingerprint, outcome, created_at, expires_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        db.commit()
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def migrated_database(directory: Path) -> Path:
    """A migrated SQLite database with one API key, made by the CLI."""
    path = directory / "sweep.db"
    env = service_env(f"sqlite:///{path}")
    run([str(BIN / "ordercancel"), "db", "upgrade"], env)
    run([str(BIN / "ordercancel"), "keys", "create", "--name", "sweep", "--json"], env)
    return path


def time_statements(path: Path, limits: list[int]) -> dict[str, dict[str, float]]:
    """Time the service's prune statement on a writer connection: alone, and with its commit."""
    from ordercancel.storage.database import configure_sqlite, sqlite_timestamp, utcnow
    from ordercancel.storage.steps import SQLITE_STATEMENTS

    db = sqlite3.connect(path, isolation_level=None)
    configure_sqlite(db)
    found: dict[str, dict[str, float]] = {}
    for limit in limits:
        statement, committed = [], []
        for _ in range(REPEATS):
            started = time.perf_counter()
            db.execute("BEGIN IMMEDIATE")
            deleted = db.execute(SQLITE_STATEMENTS.prune_keys, {"now": sqlite_timestamp(utcnow()), "limit": limit})
            assert deleted.rowcount == limit, "ran out of expired keys: give more --keys"
            done = time.perf_counter()
            db.execute("COMMIT")
            statement.append((done - started) * 1000)
            committed.append((time.perf_counter() - started) * 1000)
        found[str(limit)] = {
            "statement_median_ms": round(statistics.median(statement), 3),
            "statement_max_ms": round(max(statement), 3),
            "with_commit_median_ms": round(statistics.median(committed), 3),
            "with_commit_max_ms": round(max(committed), 3),
        }
    db.close()
    return found


def serve_with_sweeps_every(every: float, port: int) -> None:
    """Run `ordercancel serve` in this process with the Sweeper's interval changed (the body of --load)."""
    from ordercancel import cli
    from ordercancel.http import idempotency

    defaults = idempotency.Sweeper.__init__.__kwdefaults__
    assert defaults is not None and "every" in defaults
    defaults["every"] = every
    sys.exit(cli.main(["serve", "--host", "127.0.0.1", "--port", str(port)]))


def under_load(directory: Path, keys: int, seconds: int) -> list[dict[str, object]]:
    """Serve a seeded database holding `keys` expired keys under wrk, without and with sweeps."""
    plan = Plan(seconds, [200_000], 1, 2.0, None, quick=True)
    seeded = seed(directory, "orders", f"sqlite:///{directory}/orders.db", 200_000, "B", mix=False)
    fill_expired_keys(seeded.path, keys)
    found = []
    for label, every in (("no sweep during the run", 3600.0), ("sweeping back to back (every 0.5 s)", 0.5)):
        copy = directory / f"load-{every}.db"
        copy.write_bytes(seeded.path.read_bytes())
        database_url = f"sqlite:///{copy}"
        port = free_port()
        command = [sys.executable, str(Path(__file__)), "serve", str(every), str(port)]
        with serving(command, service_env(database_url), port) as pid:
            cpu_before = cpu_seconds(pid)
            lua = {"api_code": seeded.api_code, "format": "json", "prefix": "B", "width": str(WIDTH), "first": "0"}
            report = load(port, wrk_seconds(plan, seeded.count), count=str(seeded.count), seconds=str(seconds), **lua)
            cpu = cpu_seconds(pid) - cpu_before
        result = result_from(label, seeded.count, report, None, cpu)
        with sqlite3.connect(copy) as db:
            left = db.execute("SELECT count(*) FROM idempotency_keys").fetchone()[0]
        found.append(
            {
                "run": label,
                "req_per_s": round(result.rps),
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "max_ms": report["max_ms"],
                "cpu_us_per_request": round(result.cpu_us or 0, 1),
                "expired_keys_forgotten": keys - left,
                "errors": result.errors,
            }
        )
    return found


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        serve_with_sweeps_every(float(args[1]), int(args[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=200_000, help="expired keys in the database (default 200,000)")
    parser.add_argument("--load", action="store_true", help="also serve under wrk, without and with sweeps")
    parser.add_argument("--seconds", type=int, default=4, help="length of each load run (default 4)")
    options = parser.parse_args(args)
    from ordercancel.http.idempotency import SWEEP_BATCHES, SWEEP_EVERY, SWEEP_LIMIT

    with tempfile.TemporaryDirectory(prefix="ordercancel-sweep-") as scratch:
        directory = Path(scratch)
        path = migrated_database(directory)
        fill_expired_keys(path, options.keys)
        report: dict[str, object] = {
            "expired_keys": options.keys,
            "sweep": {"limit": SWEEP_LIMIT, "batches": SWEEP_BATCHES, "every_s": SWEEP_EVERY},
            "prune_statement": time_statements(path, sorted({100, 250, SWEEP_LIMIT, 1000})),
        }
        if options.load:
            if os.cpu_count() is None or os.cpu_count() == 1:
                raise SystemExit("sweep_cost: --load needs two cores, one for the server and one for wrk")
            report["load"] = under_load(directory, options.keys, options.seconds)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
