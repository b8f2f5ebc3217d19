"""Connection-level limits of `ordercancel serve`: pipelines, idle connections, upgrades, head bounds."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import resource
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httptools
import httpx
import pytest
import uvicorn
from uvicorn.protocols.http import flow_control, httptools_impl
from uvicorn.server import ServerState

from ordercancel.config import ConfigError, Settings
from ordercancel.http.app import admin_engine, create_app
from ordercancel.http.protocol import MAX_PIPELINED, BoundedHttpToolsProtocol
from ordercancel.storage import open_store
from tests.support import rawhttp
from tests.support.serving import ORDERCANCEL, ServeProcess

MIB = 1024 * 1024
BODY_TIMEOUT = 2.0
#: Seconds beyond the body timeout a hopeless connection may take to be closed (a loaded machine).
GRACE = 5.0


def _serve(directory: Path, template: Path, **options: object) -> ServeProcess:
    path = directory / "ordercancel.db"
    shutil.copy(template, path)
    env = {"ORDERCANCEL_BODY_TIMEOUT": str(BODY_TIMEOUT), **options.pop("env", {})}  # type: ignore[dict-item]
    return ServeProcess(f"sqlite:///{path}", directory / "serve.log", env=env, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def served(migrated_sqlite: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    with _serve(tmp_path_factory.mktemp("connections"), migrated_sqlite) as process:
        yield process


def rss(pid: int, field: str = "VmRSS:") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field}")  # pragma: no cover


def open_server_connections(port: int) -> int:
    """Count the server side's established TCP connections on the port."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if int(local.rsplit(":", 1)[1], 16) == port and state == "01":
                count += 1
    return count


def assert_our_headers(response: rawhttp.RawResponse) -> None:
    assert response.headers["x-ordercancel-environment"] == "sandbox"
    assert len(response.headers["x-request-id"]) == 32


# -- uvicorn's private protocol, which the bounds subclass --------------------------------------


def _parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_uvicorn_protocol_the_bounds_rely_on_has_the_shape_they_expect() -> None:
    # This fails, loudly, on a uvicorn whose private httptools protocol changed what the bounds use.
    base = httptools_impl.HttpToolsProtocol
    assert BoundedHttpToolsProtocol.__mro__[1] is base
    expected = {
        "__init__": ["self", "config", "server_state", "app_state", "_loop"],
        "connection_made": ["self", "transport"],
        "connection_lost": ["self", "exc"],
        "data_received": ["self", "data"],
        "on_message_begin": ["self"],
        "on_url": ["self", "url"],
        "on_header": ["self", "name", "value"],
        "on_headers_complete": ["self"],
        "on_message_complete": ["self"],
        "on_response_complete": ["self"],
        "pause_writing": ["self"],
        "resume_writing": ["self"],
        "send_400_response": ["self", "msg"],
        "_unset_keepalive_if_required": ["self"],
    }
    assert {name: _parameters(getattr(base, name)) for name in expected} == expected
    assert _parameters(httptools_impl.RequestResponseCycle.__init__)[-3:] == [
        "expect_100_continue",
        "keep_alive",
        "on_response",
    ]
    assert _parameters(flow_control.FlowControl.pause_reading) == ["self"]
    # The attributes the bounds read or write, on a real instance.
    config = uvicorn.Config(
        create_app(Settings(), open_store(Settings()), admin_engine(Settings())), limit_concurrency=7
    )
    state = ServerState()
    loop = asyncio.new_event_loop()
    try:
        protocol = BoundedHttpToolsProtocol(config, state, {}, _loop=loop)
    finally:
        loop.close()
    for name in ("parser", "pipeline", "cycle", "connections", "transport", "flow", "loop", "app", "headers"):
        assert hasattr(protocol, name), name
    assert protocol.connections is state.connections
    assert protocol.limit_concurrency is None  # taken over: uvicorn's own answers whole requests 503
    assert isinstance(protocol.parser, httptools.HttpRequestParser)
    assert hasattr(protocol.parser, "should_upgrade")


# -- 1. pipelining ---------------------------------------------------------------------------


def test_clients_pipelining_without_reading_are_bounded_in_memory_and_cut_off(served: ServeProcess) -> None:
    assert served.process is not None
    pid = served.process.pid
    with served.client(timeout=5) as http:
        for _ in range(20):  # warm up: the baseline is the working size
            assert http.get("/openapi.json").status_code == 200
    start = rss(pid)
    payload = b"GET /openapi.json HTTP/1.1\r\n\r\n" * 150_000
    sockets = []
    for _ in range(4):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", served.port))
        sockets.append(sock)

    def flood(sock: socket.socket) -> None:
        sock.settimeout(BODY_TIMEOUT + GRACE + 5)
        with contextlib.suppress(OSError):  # cut off, or the server stopped reading
            sock.sendall(payload)

    floods = [threading.Thread(target=flood, args=(sock,)) for sock in sockets]
    for thread in floods:
        thread.start()
    try:
        deadline = time.monotonic() + BODY_TIMEOUT + GRACE
        time.sleep(0.5)
        while open_server_connections(served.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        left_open = open_server_connections(served.port)
        growth = rss(pid, "VmHWM:") - start
    finally:
        for sock in sockets:
            sock.close()
        for thread in floods:
            thread.join(timeout=30)
    assert left_open == 0, f"{left_open} connections still open after {BODY_TIMEOUT + GRACE} s"
    assert growth <= 48 * MIB, f"RSS grew by {growth / MIB:.1f} MiB"
    with served.client(timeout=5) as http:
        assert http.get("/healthz").status_code == 200


def test_a_client_pipelining_many_requests_is_answered_a_few_then_closed(served: ServeProcess) -> None:
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
        answers = rawhttp.split_responses(rawhttp.read_until_closed(sock))
    assert [answer.status for answer in answers] == [200] * (MAX_PIPELINED + 1)
    assert answers[-1].headers["connection"] == "close"


# -- 2. idle connections ---------------------------------------------------------------------


def _low_descriptor_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (160, 160))


def test_idle_connections_exhausting_the_descriptors_do_not_lock_a_client_out(
    migrated_sqlite: Path, tmp_path: Path
) -> None:
    process = _serve(
        tmp_path,
        migrated_sqlite,
        env={"ORDERCANCEL_MAX_CONNECTIONS": "64", "ORDERCANCEL_BODY_TIMEOUT": "30"},
        preexec_fn=_low_descriptor_limit,
    )
    idle: list[socket.socket] = []
    with process:
        try:
            for _ in range(300):  # far past the 160 descriptors the server has
                idle.append(socket.create_connection(("127.0.0.1", process.port), timeout=5))
            time.sleep(0.5)
            answer = rawhttp.request(process.port, rawhttp.head("GET", "/healthz", {}), timeout=5)
        finally:
            for sock in idle:
                sock.close()
        assert answer.status in (200, 503)
        assert_our_headers(answer)
        with process.client(timeout=5) as http:
            assert http.get("/healthz").status_code == 200
        logs = process.logs()
    assert logs.count("connection cap of 64 reached") == 1, logs[-2000:]


def test_a_connection_cap_above_the_descriptor_limit_is_lowered_at_start(migrated_sqlite: Path, tmp_path: Path) -> None:
    with _serve(tmp_path, migrated_sqlite, preexec_fn=_low_descriptor_limit) as process:
        pass
    assert "the file-descriptor limit (160) leaves room for 88 connections" in process.logs()


# -- 3, 5. upgrades --------------------------------------------------------------------------


def test_an_h2c_upgrade_is_refused_and_what_follows_is_never_served(served: ServeProcess) -> None:
    upgrade = rawhttp.head("GET", "/healthz", {"Connection": "Upgrade, HTTP2-Settings", "Upgrade": "h2c"})
    post = rawhttp.head("POST", "/healthz", {"Content-Length": "39"})
    smuggled = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
    assert len(smuggled) == 39
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(upgrade + post)
        time.sleep(0.3)
        with contextlib.suppress(OSError):  # already closed: nothing was going to read it
            sock.sendall(smuggled)
        answers = rawhttp.split_responses(rawhttp.read_until_closed(sock))
    assert [(answer.status, answer.headers["connection"]) for answer in answers] == [(400, "close")]
    assert_our_headers(answers[0])


def test_a_websocket_upgrade_is_refused_like_any_request_without_an_error_line(served: ServeProcess) -> None:
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
        "Accept": "application/json",
    }
    before = served.logs()
    response = rawhttp.request(served.port, rawhttp.head("GET", "/healthz", headers))
    assert (response.status, response.headers["connection"]) == (400, "close")
    assert response.headers["content-type"].startswith("application/json")
    assert_our_headers(response)
    time.sleep(0.2)
    assert '"level":"error"' not in served.logs()[len(before) :]


# -- 4. head bound -----------------------------------------------------------------------------


def test_a_large_head_pipelined_behind_a_small_one_is_refused_431(served: ServeProcess) -> None:
    small = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    large = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Junk: " + b"a" * 150_000 + b"\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
            sock.sendall(small + large)
            answers = rawhttp.split_responses(rawhttp.read_until_closed(sock))
        assert [answer.status for answer in answers] == [200, 431]
        assert_our_headers(answers[1])


def test_pipelined_heads_that_are_each_small_are_all_answered(served: ServeProcess) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 3000 + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", served.port), timeout=10) as sock:
        sock.sendall(head * MAX_PIPELINED + b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answers = rawhttp.split_responses(rawhttp.read_until_closed(sock))
    assert [answer.status for answer in answers] == [200] * (MAX_PIPELINED + 1)


# -- 8. the smaller ones ---------------------------------------------------------------------------


@pytest.mark.parametrize("coding", ["identity, chunked", "CHUNKED", "x, chunked", "gzip"])
def test_a_transfer_coding_other_than_exactly_chunked_is_refused_501(served: ServeProcess, coding: str) -> None:
    headers = {"Transfer-Encoding": coding, "Accept": "application/json"}
    body = b"5\r\nhello\r\n0\r\n\r\n"
    response = rawhttp.request(served.port, rawhttp.head("POST", "/web-api/order/CancelOrderByNumber", headers), body)
    assert (response.status, response.headers["connection"]) == (501, "close")
    assert_our_headers(response)


def test_chunked_alone_is_still_read(served: ServeProcess) -> None:
    headers = {"Transfer-Encoding": "chunked", "Accept": "application/json"}
    body = b"5\r\nhello\r\n0\r\n\r\n"
    response = rawhttp.request(served.port, rawhttp.head("POST", "/web-api/order/CancelOrderByNumber", headers), body)
    assert response.status == 401


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /healthz HTTP/1.1\r\nNoColonHere\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nX-Junk: " + b"a" * 40_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\n", 408),
    ],
)
def test_answers_of_the_http_parser_carry_the_request_id_and_the_environment(
    served: ServeProcess, request_bytes: bytes, status: int
) -> None:
    response = rawhttp.request(served.port, request_bytes)
    assert (response.status, response.headers["connection"]) == (status, "close")
    assert_our_headers(response)


def test_an_admin_token_shorter_than_32_characters_is_refused_with_one_line() -> None:
    with pytest.raises(ConfigError, match=r"^ORDERCANCEL_ADMIN_TOKEN: must be at least 32 characters"):
        Settings.from_env({"ORDERCANCEL_ADMIN_TOKEN": "a" * 31})
    with pytest.raises(ConfigError):
        Settings(admin_token="short")
    assert Settings.from_env({"ORDERCANCEL_ADMIN_TOKEN": "a" * 32}).admin_token == "a" * 32
    assert Settings.from_env({"ORDERCANCEL_ADMIN_TOKEN": ""}).admin_token == ""


def test_serve_refuses_a_short_admin_token_in_one_line(migrated_sqlite: Path, tmp_path: Path) -> None:
    path = tmp_path / "ordercancel.db"
    shutil.copy(migrated_sqlite, path)
    done = subprocess.run(
        [ORDERCANCEL, "serve", "--port", "1"],
        env={"ORDERCANCEL_DATABASE_URL": f"sqlite:///{path}", "ORDERCANCEL_ADMIN_TOKEN": "too-short", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "ordercancel: ORDERCANCEL_ADMIN_TOKEN: must be at least 32 characters (or empty: no admin API), not 9"
    ]


def test_the_connection_cap_is_read_from_the_environment() -> None:
    assert Settings.from_env({}).max_connections == 4096
    assert Settings.from_env({"ORDERCANCEL_MAX_CONNECTIONS": "10"}).max_connections == 10
    with pytest.raises(ConfigError, match="ORDERCANCEL_MAX_CONNECTIONS"):
        Settings.from_env({"ORDERCANCEL_MAX_CONNECTIONS": "0"})


@pytest.mark.parametrize("ref", ["%00", "IMC%00", "%1b%5b31m", "%7f"])
def test_an_order_reference_with_a_control_character_is_404_before_the_database(
    admin_http: httpx.Client, ref: str
) -> None:
    response = admin_http.get(f"/admin/orders/{ref}", headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert response.json()["requestError"]["code"] == 404
