"""The HTTP/1.1 connection protocol `ordercancel serve` runs: uvicorn's httptools one, with bounds.

uvicorn with httptools bounds neither the size of a request head nor the time a client takes
to send it: a client could keep a connection open forever by trickling header bytes
(slowloris), or make the server buffer a header of any size. This protocol answers 431 once a
head passes `MAX_HEAD_BYTES`, and 408 when a head is not complete `head_timeout` seconds after
its first byte (the body has its own timeout, in web.py). Both close the connection.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ordercancel.config import Settings

#: Largest request line plus headers, in bytes (nginx's default large_client_header_buffers is 32 KiB).
MAX_HEAD_BYTES = 32 * 1024


def _refusal(status: int, reason: str) -> bytes:
    body = reason.encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


TOO_LARGE = _refusal(431, "Request Header Fields Too Large")
TIMED_OUT = _refusal(408, "Request Timeout")


@functools.cache
def head_timeout() -> float:
    """The seconds a client has to send a request head: the body's timeout, read once per process."""
    return Settings.from_env().body_timeout


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Count a request head's bytes as they arrive, and time it from its first byte.

    Most heads arrive whole in one read: for them the cost is one `bytes.find` and a few
    attribute writes, and no timer is ever set.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request head
        self._head_started = False  # the parser has seen the head's first byte
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # A connection that never sends its first head is cut off too.
        self._head_timer = self.loop.call_later(head_timeout(), self._refuse, TIMED_OUT)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            # Count only the head's bytes: a body may arrive in the same read.
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(TOO_LARGE)
                return
        super().data_received(data)
        if self._in_head and self._head_started and self._head_timer is None:
            self._head_timer = self.loop.call_later(head_timeout(), self._refuse, TIMED_OUT)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next on this connection is the next request's head.
        self._in_head, self._head_started, self._head_bytes = True, False, 0

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        super().connection_lost(exc)

    def _cancel_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, answer: bytes) -> None:
        self._cancel_timer()
        if not self.transport.is_closing():
            self.transport.write(answer)
            self.transport.close()
