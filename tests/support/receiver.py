"""A real webhook receiver on loopback: records every delivery and answers as the test says."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Delivery:
    """One request the receiver got: its path, headers (lower-case names) and raw body."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = orjson.loads(self.body)
        return event

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]


#: Decide the answer to a delivery: an HTTP status, or None to drop the connection unanswered.
Answer = Callable[[Delivery], int | None]


class Receiver:
    """ThreadingHTTPServer on 127.0.0.1; `answer` decides each status (204 by default)."""

    def __init__(self, answer: Answer = lambda delivery: 204) -> None:
        self.answer = answer
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length)
                if len(body) < length:  # the sender died mid-request: nothing was delivered
                    self.close_connection = True
                    return
                delivery = Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with receiver._lock:
                    receiver.deliveries.append(delivery)
                status = receiver.answer(delivery)
                if status is None:  # no answer: the connection is closed under the sender
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("content-length", "0")
                if 300 <= status < 400:
                    self.send_header("location", f"http://127.0.0.1:{receiver.port}/redirected")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._handler = Handler
        self._server = self._listen(0)
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread: threading.Thread | None = None

    def _listen(self, port: int) -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), self._handler)
        server.daemon_threads = True
        return server

    def __enter__(self) -> Receiver:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def stop_listening(self) -> None:
        """Close the port: connections are refused until listen_again()."""
        self.__exit__()

    def listen_again(self) -> None:
        self._server = self._listen(self.port)
        self.__enter__()

    def received(self) -> list[Delivery]:
        with self._lock:
            return list(self.deliveries)

    def wait_for(
        self, count: int, timeout: float = 10.0, predicate: Callable[[Delivery], bool] = lambda d: True
    ) -> list[Delivery]:
        """Wait, bounded, until at least `count` deliveries match; return those that do."""
        deadline = time.monotonic() + timeout
        while True:
            matching = [d for d in self.received() if predicate(d)]
            if len(matching) >= count or time.monotonic() > deadline:
                return matching
            time.sleep(0.02)
