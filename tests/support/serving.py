"""`ordercancel serve` as a real subprocess: for tests about the process itself (TLS, logs, crashes)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

ORDERCANCEL = str(Path(sys.executable).with_name("ordercancel"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServeProcess:
    """`ordercancel serve` on a free loopback port; its stderr (the JSON logs) goes to a file."""

    def __init__(
        self,
        database_url: str,
        log_path: Path,
        *,
        environment: str = "sandbox",
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        ca_file: Path | None = None,
        preexec_fn: Callable[[], object] | None = None,
    ) -> None:
        self.database_url = database_url
        self.log_path = log_path
        self.port = free_port()
        self.scheme = "https" if "--ssl-certfile" in extra_args else "http"
        self.url = f"{self.scheme}://127.0.0.1:{self.port}"
        self._args = [ORDERCANCEL, "serve", "--host", "127.0.0.1", "--port", str(self.port), *extra_args]
        self._env = {
            **os.environ,
            "ORDERCANCEL_DATABASE_URL": database_url,
            "ORDERCANCEL_ENVIRONMENT": environment,
            **(env or {}),
        }
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self.process: subprocess.Popen[bytes] | None = None
        self._preexec_fn = preexec_fn  # run in the child before it starts: e.g. lower its limits

    def client(self, **options: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=self._verify, **options)  # type: ignore[arg-type]

    def start(self, timeout: float = 20.0) -> ServeProcess:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self._args,
                env=self._env,
                stdout=log,
                stderr=log,
                preexec_fn=self._preexec_fn,  # noqa: PLW1509 (setrlimit only)
            )
        deadline = time.monotonic() + timeout
        with self.client(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"ordercancel serve exited with {self.process.returncode}:\n{self.logs()}")
                try:
                    if client.get("/healthz").status_code == 200:
                        return self
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"ordercancel serve did not answer in {timeout} s:\n{self.logs()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, no buffer is flushed; what is on disk is all there is."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
