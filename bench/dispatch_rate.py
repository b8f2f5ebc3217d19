"""The deliveries per second one webhook dispatcher sustains, and its CPU per delivery.

Seeds N orders (`ordercancel orders import`), subscribes one endpoint to their API code
(`ordercancel webhooks add`), and cancels every order through the service (`ordercancel serve`
with ORDERCANCEL_WEBHOOK_DISPATCHER=off, loaded by wrk as `make bench` does): N order.cancelled
events, N pending deliveries, nothing sent yet. Then each round starts ONE dispatcher
(`ordercancel dispatch`, pinned to core 0) against the bench's receiver (bench/webhook_receiver.py,
pinned to core 1, answers 204), and times it from its start line until the database holds no
pending delivery. Every round starts from the same backlog (SQLite: a fresh copy of the database;
PostgreSQL: the deliveries reset to pending and their attempts deleted) and is checked: N
deliveries delivered at one attempt each, and the receiver counted at least N requests.

With --base-src DIR (another tree's `src`, e.g. one made with `git worktree add`), rounds
alternate between this tree's dispatcher and that one's, each on the same backlog, so that a
change is measured against its parent in one run.

    python -m bench.dispatch_rate [--deliveries 20000] [--rounds 3] [--database-url postgresql://...]
                                  [--base-src DIR]

Results go to bench-results/dispatch-latest.json (and .md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench.bench as harness
from bench.bench import PENDING, Seeded, log

#: The dispatcher prints this once it runs (ordercancel dispatch).
STARTED = "ordercancel dispatcher on"
PG_DATABASE = "ordercancel_dispatch"
RESET = (
    "DELETE FROM webhook_attempts",
    "UPDATE webhook_deliveries SET state = 'pending', attempts = 0, due_at = created_at, lease_until = NULL, "
    "finished_at = NULL",
)


@dataclass
class Round:
    side: str
    database: str
    deliveries: int
    seconds: float
    cpu_s: float
    check: str
    note: str = ""

    @property
    def rate(self) -> float:
        return self.deliveries / self.seconds if self.seconds else 0.0

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.deliveries * 1e6 if self.deliveries else 0.0


@dataclass
class Backlog:
    """A database holding `count` pending deliveries to the receiver, and how to get it back."""

    name: str
    url: str
    count: int
    template: Path | None = None  # SQLite: the database as seeded, copied for each round
    rounds: list[Round] = field(default_factory=list)

    def fresh(self, workdir: Path) -> str:
        if self.template is not None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{workdir / 'round.db'}{suffix}").unlink(missing_ok=True)
            shutil.copyfile(self.template, workdir / "round.db")
            return f"sqlite:///{workdir / 'round.db'}"
        import psycopg

        with psycopg.connect(harness.plain_pg_url(self.url)) as db:
            for statement in RESET:
                db.execute(statement)
        return self.url


def cancel_all(seeded: Seeded, database_url: str) -> None:
    """Cancel every seeded order through the service, the dispatcher off: one pending delivery each."""
    port = harness.free_port()
    env = harness.service_env(database_url) | {"ORDERCANCEL_WEBHOOK_DISPATCHER": "off"}
    with harness.serving(harness.serve_command(port), env, port):
        report = harness.load(
            port,
            600,
            api_code=seeded.api_code,
            format="json",
            prefix=seeded.prefix,
            width=str(harness.WIDTH),
            first="0",
            count=str(seeded.count),
            seconds="600",
        )
    pending = harness.count_rows(database_url, PENDING)
    if report["canceled"] != seeded.count or pending != seeded.count:
        raise SystemExit(f"dispatch_rate: {report['canceled']} cancelled, {pending} pending, of {seeded.count}")


def prepare(name: str, database_url: str, count: int, workdir: Path, receiver_url: str) -> Backlog:
    log(f"{name}: seeding {count:,} orders, one endpoint, cancelling them all with the dispatcher off ...")
    seeded = harness.seed(workdir, name, database_url, count, "D", mix=False)
    harness.subscribe(database_url, receiver_url, seeded.api_code)
    cancel_all(seeded, database_url)
    if database_url.startswith("sqlite:///"):
        path = Path(database_url.removeprefix("sqlite:///"))
        template = workdir / f"{name}-template.db"
        harness._copy_database(path, template)
        return Backlog(name, database_url, count, template)
    return Backlog(name, database_url, count)


def dispatch_round(
    backlog: Backlog, side: str, src: Path | None, workdir: Path, receiver: harness.Receiving, *, bound: float
) -> Round:
    """Run one dispatcher over the backlog until nothing is pending; time it and its CPU."""
    database_url = backlog.fresh(workdir)
    env = harness.service_env(database_url) | {"ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE": "1"}
    if src is not None:
        env["PYTHONPATH"] = str(src)
    received_before = receiver.count()
    command = ["taskset", "-c", harness.SERVER_CORE, sys.executable, "-m", "ordercancel", "dispatch"]
    command += ["--log-level", "warning"]
    with (
        tempfile.TemporaryFile() as errors,
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=errors, text=True) as process,
    ):
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            if not line.startswith(STARTED):
                errors.seek(0)
                raise SystemExit(f"dispatch_rate: the dispatcher did not start: {errors.read().decode()[-800:]}")
            started, cpu_started = time.monotonic(), harness.cpu_seconds(process.pid)
            seconds = harness.wait_for_empty_backlog(database_url, bound, every=0.02)
            cpu = harness.cpu_seconds(process.pid) - cpu_started
            elapsed = time.monotonic() - started
        finally:
            harness.interrupt(process, 15)
    received = receiver.count() - received_before
    delivered = harness.count_rows(database_url, "webhook_deliveries WHERE state = 'delivered'")
    attempts = harness.count_rows(database_url, "webhook_attempts")
    ok = seconds is not None and delivered == attempts == backlog.count and received >= backlog.count
    note = f"{delivered} delivered, {attempts} attempts, {received} received"
    check = "ok" if ok else ("UNDRAINED" if seconds is None else "MISMATCH")
    return Round(side, backlog.name, backlog.count, seconds or elapsed, cpu, check, note)


def summary(rounds: list[Round]) -> dict[str, Any]:
    return {
        "rate": statistics.median(r.rate for r in rounds),
        "cpu_us": statistics.median(r.cpu_us for r in rounds),
        "rates": [round(r.rate) for r in rounds],
        "cpu_uss": [round(r.cpu_us, 1) for r in rounds],
        "checks": sorted({r.check for r in rounds}),
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"dispatch rate, {report['at']}, {report['cpu']}: one `ordercancel dispatch` on core "
        f"{harness.SERVER_CORE}, the receiver on core {harness.LOAD_CORE}, {report['deliveries']:,} deliveries "
        f"a round, {report['rounds']} rounds, medians; load average {report['load_before']} before, "
        f"{report['load_after']} after",
        "",
        "| database | dispatcher | deliveries/s | CPU us/delivery | rounds, deliveries/s | rounds, CPU us | check |",
        "|---|---|---:|---:|---|---|---|",
    ]
    for row in report["results"]:
        lines.append(
            f"| {row['database']} | {row['side']} | {row['rate']:,.0f} | {row['cpu_us']:.0f} "
            f"| {', '.join(f'{r:,}' for r in row['rates'])} | {', '.join(f'{c:g}' for c in row['cpu_uss'])} "
            f"| {'/'.join(row['checks'])} |"
        )
    for ratio in report["ratios"]:
        lines.append(
            f"\n{ratio['database']}: today / base, deliveries/s {ratio['rate']:.2f}x, "
            f"CPU per delivery {ratio['cpu']:.2f}x"
        )
    return "\n".join(lines)


def backlogs_for(options: argparse.Namespace, workdir: Path, receiver: harness.Receiving) -> list[Backlog]:
    """SQLite's backlog, and PostgreSQL's in a scratch database when a URL is given."""
    found = [prepare("SQLite", f"sqlite:///{workdir}/dispatch.db", options.deliveries, workdir, receiver.url)]
    if options.database_url:
        import psycopg

        with psycopg.connect(harness.plain_pg_url(options.database_url), autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")
            db.execute(f"CREATE DATABASE {PG_DATABASE}")
        url = harness.with_database(options.database_url, PG_DATABASE)
        found.append(prepare("PostgreSQL", url, options.deliveries, workdir, receiver.url))
    return found


def drop_scratch(options: argparse.Namespace) -> None:
    if options.database_url:
        import psycopg

        with psycopg.connect(harness.plain_pg_url(options.database_url), autocommit=True) as db:
            db.execute(f"DROP DATABASE IF EXISTS {PG_DATABASE} WITH (FORCE)")


def measure(options: argparse.Namespace, sides: list[tuple[str, Path | None]], workdir: Path) -> dict[str, Any]:
    """Every round of every side on every backlog, alternately; the medians and today/base ratios."""
    results: list[dict[str, Any]] = []
    ratios: list[dict[str, Any]] = []
    with harness.receiving() as receiver:
        backlogs = backlogs_for(options, workdir, receiver)
        for number in range(1, options.rounds + 1):
            for backlog in backlogs:
                for side, src in sides:
                    log(f"round {number}/{options.rounds}: {backlog.name}, {side} ...")
                    done = dispatch_round(backlog, side, src, workdir, receiver, bound=options.bound)
                    log(f"  {done.rate:,.0f} deliveries/s, {done.cpu_us:.0f} us CPU each, {done.check}")
                    backlog.rounds.append(done)
    for backlog in backlogs:
        by_side = {side: summary([r for r in backlog.rounds if r.side == side]) for side, _ in sides}
        results += [{"database": backlog.name, "side": side, **found} for side, found in by_side.items()]
        if "base" in by_side:
            today, base = by_side["today"], by_side["base"]
            rate, cpu = today["rate"] / base["rate"], today["cpu_us"] / base["cpu_us"]
            ratios.append({"database": backlog.name, "rate": rate, "cpu": cpu})
    return {"results": results, "ratios": ratios, "all_rounds": [asdict(r) for b in backlogs for r in b.rounds]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=20_000, help="pending deliveries a round (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each dispatcher (default 3)")
    parser.add_argument("--database-url", help="a PostgreSQL server to measure too (a scratch database is made)")
    parser.add_argument("--base-src", type=Path, help="another tree's src directory, measured alternately")
    parser.add_argument("--bound", type=float, default=300.0, help="seconds a round may take (default 300)")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("dispatch_rate: needs wrk and taskset (apt-get install wrk util-linux)")
    sides: list[tuple[str, Path | None]] = [("today", None)]
    if options.base_src is not None:
        sides.append(("base", options.base_src.resolve()))
    at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    harness.RESULTS.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dispatch-", dir=harness.RESULTS))
    try:
        measured = measure(options, sides, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        drop_scratch(options)
    report = {
        "at": at,
        "cpu": harness.cpu_model(),
        "deliveries": options.deliveries,
        "rounds": options.rounds,
        "load_before": load_before,
        "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        **measured,
    }
    text = table(report)
    print(text)
    (harness.RESULTS / "dispatch-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (harness.RESULTS / "dispatch-latest.md").write_text(text + "\n")
    print(f"\n(wrote {harness.RESULTS / 'dispatch-latest.json'} and dispatch-latest.md)")
    return 0 if all(r["checks"] == ["ok"] for r in measured["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
