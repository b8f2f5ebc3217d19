"""Where a cancellation's CPU goes: py-spy on `ordercancel serve` under the bench's load, by category.

Seeds 200,000 orders, serves them as `make bench` does (one worker on core 0, wrk on core 1,
the JSON request log on), samples both threads with py-spy for the run, and puts each sample
in the first category found from the innermost frame outwards (the writer's idle waits are
dropped). py-spy counts a thread inside a system call (the writer's fsync) as busy, so samples
are not CPU: each thread's samples are scaled to that thread's own CPU time over the run (the
kernel's counters, /proc/PID/task/*/stat), per request answered.

    .venv/bin/pip install py-spy
    python -m bench.profile [--seconds S] [--stacks FILE]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bench.bench as harness

#: (category, markers): a frame matches when it contains any marker. Each sample goes to the
#: first category matched by its innermost frame, then by the next frame out, and so on.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("idle: the writer waiting for work", ("Condition.wait", "Queue.get (queue.py")),
    ("writer: the UPDATE and the audit INSERT (cancel_in_transaction)", ("cancel_in_transaction",)),
    ("writer: BEGIN and COMMIT, the fsync included (GroupCommitWriter._attempt)", ("GroupCommitWriter._attempt",)),
    ("writer: batching and settling", ("GroupCommitWriter", "_run_jobs", "_answer (", "steps.py")),
    ("the request id", ("request_id (",)),
    ("the timestamp (utcnow, sqlite_timestamp)", ("sqlite_timestamp", "utcnow")),
    ("the request log line (AccessLog, logging)", ("AccessLog", "JsonFormatter", "LogTime", "logging/__init__.py")),
    ("metrics (Metrics.observe, prometheus_client)", ("prometheus_client", "Metrics.observe")),
    ("the hand-over to the writer and back", ("submit", "_hand_over", "_settle_all", "SqliteStore.cancel")),
    ("authentication", ("authenticate", "cache.py", "api_key_hash", "hash_api_code", "parse_guid")),
    ("rate limits, idempotency (fairuse.py, idempotency.py, limits)", ("fairuse.py", "idempotency.py", "limits/")),
    ("sandbox hints (app.py)", ("_accept_hint", "_unaccepted_content_type", "with_sandbox_hints")),
    ("negotiation and codecs", ("codecs.py", "negotiate")),
    ("domain", ("domain.py",)),
    ("reading the body, its deadline", ("Request.body", "Request._read", "BodyDeadlines")),
    ("our app layer (core.py, app.py)", ("core.py", "app.py", "<string>", "dataclasses.py")),
    ("HTTP stack (uvicorn, httptools, protocol.py)", ("uvicorn/protocols", "httptools", "protocol.py")),
    ("the event loop itself (uvloop: epoll, socket reads and writes)", ("Runner.run", "asyncio_run")),
]


def categorize(stacks: Path) -> Counter[str]:
    """Count py-spy's raw samples (`frame;frame;... count`, outermost first) by category."""
    counts: Counter[str] = Counter()
    for line in stacks.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        found = "other"
        for frame in reversed(frames.split(";")):
            match = next((name for name, marks in CATEGORIES if any(m in frame for m in marks)), None)
            if match is not None:
                found = match
                break
        counts[found] += int(count)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--stacks", type=Path, help="keep py-spy's raw stacks in this file")
    options = parser.parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(harness.BIN)) or shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("bench.profile: py-spy is not installed (.venv/bin/pip install py-spy)")
    plan = harness.Plan(options.seconds, [200_000], 1, 2.0, None, quick=True)
    work = Path(tempfile.mkdtemp(prefix="ordercancel-profile-"))
    stacks = options.stacks or work / "stacks.txt"
    started: list[subprocess.Popen[bytes]] = []
    thread_cpu_after: list[dict[str, float]] = []
    server_pid: list[int] = []
    serving = harness.serving

    def serving_with_py_spy(command: list[str], env: dict[str, str], port: int, ready_path: str = "/healthz") -> Any:
        context = serving(command, env, port, ready_path)
        pid = context.__enter__()
        spy = [py_spy, "record", "-p", str(pid), "-r", "200", "-d", str(options.seconds), "--threads"]
        started.append(subprocess.Popen([*spy, "--nonblocking", "--format", "raw", "-o", str(stacks)]))
        time.sleep(0.5)  # py-spy attaches before the load starts
        before = thread_cpu(pid)
        server_pid.append(pid)

        def after(pid: int) -> None:
            now = thread_cpu(pid)
            thread_cpu_after.append({name: now[name] - before.get(name, 0.0) for name in now})

        return _Entered(context, pid, after)

    try:
        seeded = harness.seed(work, "main", f"sqlite:///{work}/main.db", 200_000, "B", mix=False)
        harness.serving = serving_with_py_spy
        result = harness.cancel_scenario(plan, "service", seeded, harness.fresh_copy(seeded, work), "json")
        for spy_process in started:
            spy_process.wait(timeout=options.seconds + 30)
        counts = categorize(stacks)
    finally:
        harness.serving = serving
        if options.stacks is None:
            shutil.rmtree(work, ignore_errors=True)
    cpu = result.cpu_us or 0.0
    threads = thread_cpu_after[0] if thread_cpu_after else {}
    process = sum(threads.values()) or 1.0
    # Python 3.11 does not name OS threads: every thread but the main one (tid = pid) is the writer.
    writer_share = sum(t for name, t in threads.items() if not name.endswith(f"/{server_pid[0]}")) / process
    print(f"{result.rps:,.0f} req/s, {cpu:.1f} CPU us/req, p99 {result.p99_ms:.1f} ms, db check {result.check}")
    print(f"CPU by thread: event loop {1 - writer_share:.0%}, writer {writer_share:.0%}")
    print("| where | thread | % of the thread's samples | % of CPU | us per request |\n|---|---|---:|---:|---:|")
    busy = {name: n for name, n in counts.items() if not name.startswith("idle")}
    samples = {
        thread: sum(n for name, n in busy.items() if name.startswith("writer") == (thread == "writer")) or 1
        for thread in ("loop", "writer")
    }
    rows = []
    for name, n in busy.items():
        thread = "writer" if name.startswith("writer") else "loop"
        share = writer_share if thread == "writer" else 1 - writer_share
        rows.append((share * n / samples[thread], name, thread, n / samples[thread]))
    for of_cpu, name, thread, of_thread in sorted(rows, reverse=True):
        print(f"| {name} | {thread} | {100 * of_thread:.1f} | {100 * of_cpu:.1f} | {cpu * of_cpu:.0f} |")
    return 0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) of each thread of a process so far, by thread name and id."""
    found: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        found[f"{name}/{task.name}"] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return found


class _Entered:
    """A context already entered: leaving it leaves the wrapped one."""

    def __init__(self, context: Any, pid: int, on_exit: Any) -> None:
        self._context, self._pid, self._on_exit = context, pid, on_exit

    def __enter__(self) -> int:
        return self._pid

    def __exit__(self, *exc: object) -> None:
        self._on_exit(self._pid)
        self._context.__exit__(*exc)


if __name__ == "__main__":
    sys.exit(main())
