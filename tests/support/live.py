"""The real app on uvicorn, in a thread of the test process: the default server of a test."""

from __future__ import annotations

import asyncio
import socket
import threading

import uvicorn
import uvloop

from ordercancel.config import Settings
from ordercancel.http.app import admin_engine, create_app
from ordercancel.storage import open_store

#: The bearer token of the `admin_server` fixture's admin API.
ADMIN_TOKEN = "test-admin-token-5f1c-0123456789abcdef"


class LiveServer:
    """The real app on uvicorn, on a free loopback port, in a thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings, open_store(settings), admin_engine(settings)),
            log_level="warning",
            access_log=False,
            lifespan="on",
            ws="none",  # as under `ordercancel serve`: an upgrade is refused, never a WebSocket
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        # uvloop, as under `ordercancel serve`. asyncio's own loop sets TCP_NODELAY only on sockets
        # made with an explicit IPPROTO_TCP, which this one is not: Nagle then held each response
        # body behind its headers until the client's delayed ACK, 40 ms a request.
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(self._server.serve(sockets=[self._socket]))

    def __enter__(self) -> LiveServer:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            threading.Event().wait(0.005)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # A webhook dispatcher may be mid-query: wait for it, so that the test's database can go.
        self.stop(wait=self.settings.webhook_dispatcher)

    def stop(self, *, wait: bool = True) -> None:
        """Ask the server to shut down; waiting costs uvicorn's 0.1 s ticks, which add up per test."""
        self._server.should_exit = True
        if wait:
            self._thread.join(timeout=10)
