"""Soak: find the maximum throughput, then hold 80 % of it for ten minutes and watch for drift.

    .venv/bin/python bench/soak.py [--minutes 10] [--probe-seconds 20] [--orders 300000]

One `ordercancel serve` process (the production configuration: SQLite, durable group commit,
JSON access log at INFO into a file) pinned to CPU 0, `wrk` with 64 connections pinned to
CPU 1, loopback only. Each minute is one wrk run; the server's RSS is read after each. The
verdict: no errors (non-2xx, socket errors, server log lines at error level), p99 of the last
minute within 1.5x of the first, and RSS growth from the end of minute 1 to the end under 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from ordercancel.config import Environment, Settings
from ordercancel.storage import database, service

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
CONNECTIONS = 64


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def seed(path: Path, orders: int) -> str:
    settings = Settings(database_url=f"sqlite:///{path}", environment=Environment.SANDBOX)
    engine = database.create_sync_engine(settings)
    database.upgrade(engine)
    code = service.create_key(engine, settings.environment, "soak")
    key_id = service.list_keys(engine, settings.environment)[0].id
    engine.dispose()
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO orders (order_id, order_number, api_key_id, status, payment_status, created_at, placed_at) "
            "VALUES (?, ?, ?, 'Ordered', 'PaymentOK', '2026-01-01 00:00:00.000000', '2026-01-01 00:00:00.000000')",
            ((str(uuid.uuid4()), f"SOAK{i:07d}", key_id) for i in range(orders)),
        )
    return code


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def wrk(url: str, seconds: int, env: dict[str, str]) -> dict[str, object]:
    command = [
        "taskset", "-c", "1", "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s",
        "-s", str(HERE / "soak.lua"), url,
    ]  # fmt: skip
    output = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
    result: dict[str, object] = json.loads(output.strip().splitlines()[-1])
    return result


def summary(run: dict[str, object]) -> tuple[float, int, float, float]:
    """Return (requests/s, errors, p50 ms, p99 ms) of one wrk run."""
    errors = sum(run["errors"].values())  # type: ignore[attr-defined]
    rate = int(run["requests"]) / (int(run["duration_us"]) / 1e6)  # type: ignore[call-overload]
    return rate, errors, int(run["p50_us"]) / 1000, int(run["p99_us"]) / 1000  # type: ignore[call-overload]


Row = tuple[int, float, float, float, int, float]


def hold(
    url: str, lua_env: dict[str, str], args: argparse.Namespace, *, target: float, probe: dict[str, object], pid: int
) -> list[Row]:
    """Run the measured intervals at the target rate; print and return one row per interval."""
    # Each connection waits `delay` between its answer and its next request: rate = c / (delay + latency).
    delay_ms = max(0.0, CONNECTIONS * 1000 / target - summary(probe)[2])
    offset = int(probe["last"])  # type: ignore[call-overload]
    rows: list[Row] = []
    print("| minute | req/s | p50 ms | p99 ms | errors | cancelled | refused | server RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for minute in range(1, args.minutes + 1):
        run = wrk(url, args.interval, {**lua_env, "SOAK_DELAY_MS": f"{delay_ms:.3f}", "SOAK_OFFSET": str(offset)})
        offset = int(run["last"])  # type: ignore[call-overload]
        rate, errors, p50, p99 = summary(run)
        memory = rss(pid) / 2**20
        rows.append((minute, rate, p50, p99, errors, memory))
        print(
            f"| {minute} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {errors} | {run['cancelled']:,} | "
            f"{run['refused']:,} | {memory:.1f} |",
            flush=True,
        )
        # Steer the next interval's rate toward the target.
        delay_ms = max(0.0, delay_ms + 0.7 * CONNECTIONS * 1000 * (1 / target - 1 / max(rate, 1.0)))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--probe-seconds", type=int, default=20)
    # Enough that every request of a ten-minute run at ~8,000/s is a fresh cancellation.
    parser.add_argument("--orders", type=int, default=6_000_000)
    parser.add_argument("--interval", type=int, default=60, help="seconds per measured interval (a 'minute')")
    parser.add_argument("--load", type=float, default=0.8, help="share of the measured maximum to hold")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("soak: needs wrk (Debian package wrk)", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="ordercancel-soak-"))
    db = workdir / "soak.db"
    log = workdir / "serve.log"
    print(f"seeding {args.orders:,} orders in {db}", flush=True)
    code = seed(db, args.orders)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"ORDERCANCEL_DATABASE_URL": f"sqlite:///{db}", "ORDERCANCEL_ENVIRONMENT": "sandbox"}
    with log.open("wb") as log_file:
        server = subprocess.Popen(
            ["taskset", "-c", "0", str(BIN / "ordercancel"), "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log_file,
            stderr=log_file,
        )
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        lua_env = {"SOAK_API_CODE": code, "SOAK_ORDERS": str(args.orders)}
        probe = wrk(url, args.probe_seconds, lua_env)
        max_rate, probe_errors, probe_p50, probe_p99 = summary(probe)
        target = max_rate * args.load
        print(
            f"maximum: {max_rate:,.0f} req/s (p50 {probe_p50:.2f} ms, p99 {probe_p99:.2f} ms, {probe_errors} errors); "
            f"holding {args.load:.0%} = {target:,.0f} req/s for {args.minutes} min",
            flush=True,
        )
        rows = hold(url, lua_env, args, target=target, probe=probe, pid=server.pid)
        assert server.poll() is None, "the server died"
    finally:
        server.terminate()
        server.wait(timeout=30)
    log_errors = sum(1 for line in log.open() if '"level":"error"' in line or "Traceback" in line)
    total_errors = sum(row[4] for row in rows) + log_errors
    p99_drift = rows[-1][3] / rows[0][3]
    growth = (rows[-1][5] - rows[0][5]) / rows[0][5]
    mean_rate = sum(row[1] for row in rows) / len(rows)
    log_size = log.stat().st_size / 2**20
    print(
        f"\nheld {mean_rate:,.0f} req/s ({mean_rate / max_rate:.0%} of the maximum {max_rate:,.0f}) for "
        f"{len(rows)} intervals of {args.interval} s; errors {total_errors} (of which server log {log_errors}); "
        f"p99 last/first interval {p99_drift:.2f}x; RSS {rows[0][5]:.1f} -> {rows[-1][5]:.1f} MiB ({growth:+.1%}); "
        f"access log {log_size:.0f} MiB"
    )
    verdict = total_errors == 0 and p99_drift <= 1.5 and growth < 0.05
    print("verdict:", "PASS" if verdict else "FAIL")
    shutil.rmtree(workdir)
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
