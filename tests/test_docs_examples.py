"""Every `sh` and `python` block of README.md and docs/*.md runs as written after `make run`.

The sandbox is seeded as `make run` seeds it (db upgrade, demo, serve), the `export` lines
that `ordercancel demo` prints are applied as a reader pastes them, and each block then runs on
its own from the project's directory. A block fails when it exits non-zero or when a request it
sent was answered 401, 404, 504, 505 or 5xx: a code the reader does not have, or an order the
reader does not own. Blocks with any other info string (`console`, `text`, ...) are not run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.serving import ORDERCANCEL, ServeProcess

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"sh", "python"}
#: Seconds a block may take.
BLOCK_TIMEOUT = 60
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_EXPORT = re.compile(r"^\s*(export [A-Z_]+=.*)$", re.MULTILINE)
#: Commands that hold the terminal: in a runnable block they would never end.
_HOLDS_THE_TERMINAL = re.compile(r"\b(make (?:run|test|bench|fuzz|crash|soak)\b|ordercancel serve\b)")
#: Answers that mean an example used what the reader does not have.
_FORBIDDEN_OUTCOMES = {401, 404, 504, 505}


@dataclass(frozen=True, slots=True)
class Block:
    path: Path
    line: int
    language: str
    text: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def runnable_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file whose info string is exactly `sh` or `python`."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        language = match.group(1).strip()
        if language in RUN:
            line = text.count("\n", 0, match.start()) + 1
            blocks.append(Block(path, line, language, match.group(2)))
    return blocks


def _cases() -> Iterator[object]:
    for path in DOCUMENTS:
        for block in runnable_blocks(path):
            yield pytest.param(block, id=block.name)


@dataclass
class Sandbox:
    server: ServeProcess
    env: dict[str, str]
    exports: list[str]

    def new_log_lines(self, since: int) -> list[dict[str, object]]:
        lines = self.server.logs().splitlines()[since:]
        entries = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("logger") == "ordercancel.access":
                entries.append(entry)
        return entries


def _applied(exports: list[str], base: dict[str, str]) -> dict[str, str]:
    """The environment after a shell ran the export lines, exactly as printed."""
    script = "\n".join([*exports, "env -0"])
    result = subprocess.run(["bash", "-c", script], env=base, capture_output=True, check=True, timeout=30)
    pairs = (item.split("=", 1) for item in result.stdout.decode().split("\0") if "=" in item)
    return dict(pairs)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A sandbox as `make run` leaves it: migrated, the demo seeded, served; the exports applied."""
    directory = tmp_path_factory.mktemp("docs-sandbox")
    database_url = f"sqlite:///{directory}/ordercancel.db"
    # A reader's shell: none of our variables set, except what the printed lines set.
    base = {key: value for key, value in os.environ.items() if not key.startswith("ORDERCANCEL_")}
    base["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    server = ServeProcess(database_url, directory / "serve.log")

    def ordercancel(*args: str) -> str:
        result = subprocess.run(
            [ORDERCANCEL, *args, "--database-url", database_url],
            env=base,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    ordercancel("db", "upgrade")
    printed = ordercancel("demo", "--host", "127.0.0.1", "--port", str(server.port))
    exports = _EXPORT.findall(printed)
    names = {line.split("=", 1)[0].removeprefix("export ") for line in exports}
    assert {"PATH", "ORDERCANCEL_API_CODE", "ORDERCANCEL_SANDBOX_URL"} <= names, printed
    assert f"ordercancel (sandbox) on {server.url}" in printed  # the ready line it says to wait for
    env = _applied(exports, base)
    server._env = {**base, "ORDERCANCEL_DATABASE_URL": database_url, "ORDERCANCEL_ENVIRONMENT": "sandbox"}
    server._env["ORDERCANCEL_DEMO_API_CODE"] = env["ORDERCANCEL_API_CODE"]
    with server:
        yield Sandbox(server, env, exports)


def _command(block: Block) -> list[str]:
    if block.language == "sh":
        return ["bash", "-euo", "pipefail", "-c", block.text]
    return ["python", "-c", block.text]


def _run(block: Block, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a block in a process group of its own, so that a timeout ends whatever it started."""
    with subprocess.Popen(
        _command(block),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"{block.name} did not end in {BLOCK_TIMEOUT} s")
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_documents_have_runnable_blocks() -> None:
    ours = ROOT / "docs" / "integrating.md"
    assert len(runnable_blocks(ours)) >= 8
    assert {block.language for block in runnable_blocks(ours)} == RUN


def test_make_run_prints_the_exports_and_the_ready_line_the_docs_need(sandbox: Sandbox) -> None:
    env = sandbox.env
    assert env["PATH"].split(":")[0] == str(Path(ORDERCANCEL).parent)
    assert env["ORDERCANCEL_SANDBOX_URL"] == sandbox.server.url
    assert re.fullmatch(r"[0-9a-f-]{36}", env["ORDERCANCEL_API_CODE"])
    which = subprocess.run(
        ["bash", "-c", "command -v ordercancel"], env=env, capture_output=True, text=True, check=False
    )
    assert which.stdout.strip() == ORDERCANCEL


@pytest.mark.parametrize("block", list(_cases()))
def test_a_documented_block_runs_as_written(sandbox: Sandbox, block: Block) -> None:
    held = _HOLDS_THE_TERMINAL.search(block.text)
    assert held is None, f"{block.name}: {held.group(1)!r} holds the terminal: mark the block `console`, not `sh`"
    seen = len(sandbox.server.logs().splitlines())
    result = _run(block, sandbox.env)
    output = f"--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == 0, f"{block.name} exited {result.returncode}\n{output}"
    answered = [
        (entry.get("endpoint"), entry.get("status"), entry.get("outcome")) for entry in sandbox.new_log_lines(seen)
    ]
    bad = [
        answer
        for answer in answered
        if answer[1] in _FORBIDDEN_OUTCOMES or answer[2] in _FORBIDDEN_OUTCOMES or int(str(answer[1])) >= 500
    ]
    assert bad == [], f"{block.name} sent requests the reader cannot have meant: {bad}\n{output}"
