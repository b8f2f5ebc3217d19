"""What the client library costs on top of plain httpx per request, over loopback.

    .venv/bin/python -m bench.client_overhead [REQUESTS]

Starts the real service (`ordercancel serve`, SQLite in a temporary directory) in a process of
its own, as in production (served from a thread of this process, each request costs tens of
milliseconds of hand-over, which would hide the client's cost), and sends REQUESTS requests one
at a time three ways: plain httpx posting ready-made JSON, ordercancel.client in JSON, and in
XML. The requests carry an unknown API code, so the server answers 401 without
touching the disk: a durable commit (an fsync, tens of milliseconds on a shared disk) would
otherwise hide the client's own cost. Prints requests per second and the ratio to plain httpx in
the same run (absolute figures drift from machine to machine; the ratio much less).
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path

import httpx

from ordercancel.client import Client, Unauthorized

UNKNOWN_CODE = "0f8fad5b-d9cb-469f-a165-70867728950e"


def plain_httpx(url: str, count: int) -> None:
    headers = {"apiCode": UNKNOWN_CODE, "Content-Type": "application/json", "Accept": "application/json"}
    with httpx.Client(base_url=url) as http:
        for _ in range(count):
            response = http.post(
                "/web-api/order/CancelOrderByNumber", content=b'{"orderNumber": "IMC1"}', headers=headers
            )
            assert response.json()["requestError"]["code"] == 401


def client(url: str, count: int, fmt: str) -> None:
    with Client(UNKNOWN_CODE, base_url=url, format=fmt) as api:  # type: ignore[arg-type]
        for _ in range(count):
            with suppress(Unauthorized):
                api.cancel_by_number("IMC1")


@contextmanager
def service(folder: str) -> Iterator[str]:
    """Run `ordercancel serve` on a free loopback port; yield its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = str(Path(sys.executable).parent / "ordercancel")
    env = {
        **os.environ,
        "ORDERCANCEL_DATABASE_URL": f"sqlite:///{folder}/bench.db",
        "ORDERCANCEL_ENVIRONMENT": "sandbox",
    }
    subprocess.run([command, "db", "upgrade"], env=env, check=True, capture_output=True)
    server = subprocess.Popen([command, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                httpx.get(url + "/healthz")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


def main(count: int, rounds: int = 5) -> None:
    rates: dict[str, list[float]] = {"httpx": [], "client-json": [], "client-xml": []}
    with tempfile.TemporaryDirectory() as folder, service(folder) as url:
        ways: dict[str, Callable[[], None]] = {
            "httpx": partial(plain_httpx, url, count),
            "client-json": partial(client, url, count, "json"),
            "client-xml": partial(client, url, count, "xml"),
        }
        for _ in range(rounds):  # interleaved, so that a neighbour's burst hits every way alike
            for way, run in ways.items():
                started = time.perf_counter()
                run()
                rates[way].append(count / (time.perf_counter() - started))
    anchor = statistics.median(rates["httpx"])
    for way, measured in rates.items():
        rate = statistics.median(measured)
        print(f"{way:12} {rate:7.0f} req/s  {rate / anchor:.2f}x plain httpx  (median of {rounds})")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
