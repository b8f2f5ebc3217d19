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
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        in_head = self._in_head
        if in_head and self._head_timer is None:
            self._head_timer = self.loop.call_later(head_timeout(), self._refuse, TIMED_OUT)
        super().data_received(data)
        # Counted after parsing, so that a head and a body arriving in one read are not
        # mistaken for a large head; one read is bounded by the transport's buffer size.
        if in_head and self._in_head:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_timer()
        super().on_headers_complete()

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
