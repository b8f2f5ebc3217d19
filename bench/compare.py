"""`make bench-compare BASE=<git ref>`: today's tree against BASE, measured alternately in one run.

BASE is checked out with `git worktree add --detach` in a scratch directory. Both sides run on
this venv's interpreter and libraries; each side's own `src` comes first on PYTHONPATH, so every
process the bench starts (the CLI that seeds, the server, the storage loop) imports that side's
`ordercancel`. When BASE declares other dependencies than today's pyproject.toml, it gets a venv
of its own in the scratch directory instead (slower, but it cannot run on the wrong libraries).

Both sides seed their own databases with their own CLI (so a schema change between them cannot
break either) from the same rows: same orders, same numbers, same mix. Then each scenario runs
A, B, A, B, ... (today first), each run on a fresh copy, so that a neighbour's burst of load
spoils one run of each side rather than all of one. The table gives the median of each side and
their ratio; CPU µs per request (server CPU time / answers) is the steadiest figure here.

    python -m bench.compare --base REF [--rounds N] [--seconds S] [--scenarios json,xml,mix,http]
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
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bench.bench as harness
from bench.bench import ROOT, Plan, Result, Seeded, log

#: The scenarios a comparison can run, by the short name --scenarios takes.
SCENARIOS: dict[str, str] = {
    "json": "SQLite, JSON, all succeed",
    "xml": "SQLite, XML, all succeed",
    "mix": "SQLite, JSON, 70/30 mix",
    "http": "anchor: HTTP ceiling (same stack, no-op route)",
}
ORDERS = 200_000


@dataclass
class Side:
    """One tree under test: where its code is, and the interpreter's bin directory that runs it."""

    name: str
    ref: str
    src: Path
    bin: Path
    seeded: dict[str, Seeded] = field(default_factory=dict)


@contextmanager
def running(side: Side) -> Iterator[None]:
    """Make every process the harness starts in this block run the side's code."""
    saved_path, saved_bin = os.environ.get("PYTHONPATH"), harness.BIN
    os.environ["PYTHONPATH"] = str(side.src)
    harness.BIN = side.bin
    try:
        yield
    finally:
        harness.BIN = saved_bin
        if saved_path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved_path


def git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"bench-compare: git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def dependencies(pyproject: Path) -> list[str]:
    project: dict[str, Any] = tomllib.loads(pyproject.read_text())["project"]
    return sorted(project.get("dependencies", []))


def base_side(ref: str, scratch: Path) -> Side:
    """Check BASE out in the scratch directory and decide what runs it."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    tree = scratch / "base"
    git("worktree", "add", "--detach", str(tree), commit)
    bin_dir = harness.BIN
    if dependencies(tree / "pyproject.toml") != dependencies(ROOT / "pyproject.toml"):
        log(f"bench-compare: {ref} declares other dependencies: building a venv for it ...")
        venv = scratch / "venv"
        harness.run([sys.executable, "-m", "venv", str(venv)])
        harness.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(tree)])
        bin_dir = venv / "bin"
    return Side("base", f"{ref} ({commit[:10]})", tree / "src", bin_dir)


def check_imports(side: Side) -> None:
    """Refuse to measure a side whose processes would not import its own code."""
    with running(side):
        found = harness.run([str(side.bin / "python"), "-c", "import ordercancel; print(ordercancel.__file__)"])
    if not Path(found.strip()).resolve().is_relative_to(side.src.resolve()):
        raise SystemExit(f"bench-compare: the {side.name} side imports {found.strip()}, not its tree {side.src}")


def seed_side(side: Side, workdir: Path, names: set[str]) -> None:
    with running(side):
        if names & {"json", "xml"}:
            log(f"{side.name}: seeding {ORDERS:,} orders ...")
            db = f"sqlite:///{workdir}/{side.name}-main.db"
            side.seeded["main"] = harness.seed(workdir, f"{side.name}-main", db, ORDERS, "B", mix=False)
        if "mix" in names:
            log(f"{side.name}: seeding the 70/30 mix ...")
            db = f"sqlite:///{workdir}/{side.name}-mix.db"
            side.seeded["mix"] = harness.seed(workdir, f"{side.name}-mix", db, ORDERS, "M", mix=True)


def measure(plan: Plan, side: Side, name: str, workdir: Path) -> Result:
    label = SCENARIOS[name]
    with running(side):
        if name == "http":
            return harness.noop_anchor(plan)
        source = side.seeded["mix" if name == "mix" else "main"]
        url = harness.fresh_copy(source, workdir)
        return harness.cancel_scenario(plan, label, source, url, "xml" if name == "xml" else "json")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def summary(name: str, runs: dict[str, list[Result]]) -> dict[str, Any]:
    def side(results: list[Result]) -> dict[str, Any]:
        return {
            "rps": median([r.rps for r in results]),
            "cpu_us": median([r.cpu_us for r in results if r.cpu_us is not None]),
            "p99_ms": median([r.p99_ms for r in results]),
            "runs": [round(r.rps) for r in results],
            "checks": sorted({r.check for r in results}),
        }

    today, base = side(runs["today"]), side(runs["base"])
    return {
        "scenario": SCENARIOS[name],
        "today": today,
        "base": base,
        "rps_ratio": today["rps"] / base["rps"] if base["rps"] else 0.0,
        "cpu_ratio": today["cpu_us"] / base["cpu_us"] if base["cpu_us"] else 0.0,
    }


def table(report: dict[str, Any]) -> str:
    lines = [
        f"bench-compare, {report['at']}, {report['cpu']}: today ({report['today']}) against base ({report['base']}),",
        f"{report['rounds']} alternating runs each (today first), {report['seconds']} s a run, medians",
        "",
        "| scenario | today req/s | base req/s | today/base | today CPU us/req | base CPU us/req | today/base "
        "| today p99 ms | base p99 ms | db check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in report["scenarios"]:
        t, b = s["today"], s["base"]
        checks = "/".join(sorted(set(t["checks"]) | set(b["checks"]) - {"-"})) or ""
        lines.append(
            f"| {s['scenario']} | {t['rps']:,.0f} | {b['rps']:,.0f} | {s['rps_ratio']:.3f} | {t['cpu_us']:.1f} "
            f"| {b['cpu_us']:.1f} | {s['cpu_ratio']:.3f} | {t['p99_ms']:.1f} | {b['p99_ms']:.1f} | {checks} |"
        )
    lines.append("")
    for s in report["scenarios"]:
        lines.append(f"runs, {s['scenario']}: today {s['today']['runs']}, base {s['base']['runs']} req/s")
    return "\n".join(lines)


def compare(plan: Plan, ref: str, names: list[str], scratch: Path) -> dict[str, Any]:
    workdir = scratch / "work"
    workdir.mkdir()
    today = Side("today", "working tree", ROOT / "src", harness.BIN)
    base = base_side(ref, scratch)
    for side in (today, base):
        check_imports(side)
        seed_side(side, workdir, set(names))
    runs: dict[str, dict[str, list[Result]]] = {name: {"today": [], "base": []} for name in names}
    for round_number in range(1, plan.rounds + 1):
        for name in names:
            for side in (today, base):
                log(f"round {round_number}/{plan.rounds}: {side.name}: {SCENARIOS[name]} ...")
                result = measure(plan, side, name, workdir)
                log(f"  {result.rps:,.0f} req/s, {result.cpu_us or 0:.1f} us CPU/req, check {result.check}")
                runs[name][side.name].append(result)
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": harness.cpu_model(),
        "today": today.ref,
        "base": base.ref,
        "rounds": plan.rounds,
        "seconds": plan.seconds,
        "scenarios": [summary(name, runs[name]) for name in names],
        "runs": {name: {k: [asdict(r) for r in v] for k, v in by_side.items()} for name, by_side in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="the git ref to compare today's tree with (main, HEAD~1, ...)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each scenario on each side (default 3)")
    parser.add_argument("--seconds", type=int, default=5, help="length of each load run (default 5)")
    parser.add_argument("--scenarios", default="json,xml,mix", help=f"comma-separated, of {','.join(SCENARIOS)}")
    options = parser.parse_args(argv)
    names = [n.strip() for n in options.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise SystemExit(f"bench-compare: unknown scenarios {unknown}; choose from {', '.join(SCENARIOS)}")
    if shutil.which("wrk") is None or shutil.which("taskset") is None:
        raise SystemExit("bench-compare: needs wrk and taskset (apt-get install wrk util-linux)")
    plan = Plan(options.seconds, [ORDERS], options.rounds, 2.0, None, quick=False)
    scratch = Path(tempfile.mkdtemp(prefix="ordercancel-compare-"))
    started = time.monotonic()
    try:
        report = compare(plan, options.base, names, scratch)
    finally:
        if (scratch / "base").exists():
            git("worktree", "remove", "--force", str(scratch / "base"))
        shutil.rmtree(scratch, ignore_errors=True)
    report["wall_seconds"] = round(time.monotonic() - started, 1)
    text = table(report)
    print(text)
    harness.RESULTS.mkdir(exist_ok=True)
    (harness.RESULTS / "compare-latest.json").write_text(json.dumps(report, indent=2) + "\n")
    (harness.RESULTS / "compare-latest.md").write_text(text + "\n")
    print(f"\n(wrote {harness.RESULTS / 'compare-latest.json'} and compare-latest.md; {report['wall_seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
