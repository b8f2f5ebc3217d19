"""The HTTP/1.1 connection protocol `ordercancel serve` runs: uvicorn's httptools one, with bounds.

uvicorn with httptools bounds neither a request head nor a connection: a client could trickle
header bytes forever (slowloris), make the server buffer a header of any size, queue pipelined
requests without end, never read its answers, or hold every file descriptor with idle
connections. This protocol bounds each of these, per connection and per process:

- a head larger than `MAX_HEAD_BYTES` is answered 431, one not complete `head_timeout`
  seconds after its first byte 408 (the body has its own timeout, in core.py); both close;
- at most `MAX_PIPELINED` requests wait behind the one being answered; past that the
  connection stops reading, answers what it holds and closes;
- a connection whose answers cannot be written within the body timeout is cut off;
- past the connection cap (uvicorn's `limit_concurrency`), the connection idle the longest
  makes room for the new one; with none idle, the new one is answered 503;
- an `Upgrade` (WebSocket, h2c, ...) is answered 400, a transfer coding other than exactly
  `chunked` 501; both close, so that what follows is never read as a request.

Every answer carries the app's own headers (the environment, X-Request-ID): the ones decided
before a request exists are written here, the others go through the app like any refusal.
uvicorn 0.54's protocol is private: tests/test_connections.py checks the shape relied on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from ordercancel.http.core import App

#: Largest request line plus headers, in bytes (nginx's default large_client_header_buffers is 32 KiB).
MAX_HEAD_BYTES = 32 * 1024
#: Most requests a connection may have waiting behind the one being answered.
MAX_PIPELINED = 8
#: Seconds between two warnings that the connection cap is reached.
CAP_WARNING_SECONDS = 60.0
#: What a request line costs beyond its URL ("GET " and " HTTP/1.1\r\n"), and a header beyond its name and value.
_LINE_BYTES, _HEADER_BYTES = 16, 4

log = logging.getLogger("ordercancel")


class _Stop(Exception):
    """Raised in a parser callback to stop parsing: nothing more is read from the connection."""


class _Connections:
    """The connections of one server waiting for a request, the longest-waiting first."""

    def __init__(self) -> None:
        self.waiting: dict[BoundedHttpToolsProtocol, None] = {}
        self.warned_at = -CAP_WARNING_SECONDS

    def warn_cap_reached(self, cap: int, now: float) -> None:
        if now - self.warned_at >= CAP_WARNING_SECONDS:
            self.warned_at = now
            log.warning(
                "connection cap of %d reached: idle connections are closed, new ones refused with 503 when none is"
                " idle; limit connections per client address at the proxy",
                cap,
            )


_SERVERS: weakref.WeakKeyDictionary[ServerState, _Connections] = weakref.WeakKeyDictionary()


def served_app(loaded: object) -> App:
    """Find our App inside what uvicorn serves, through the middleware wrapping it."""
    seen = 0
    while not isinstance(loaded, App):
        loaded = getattr(loaded, "app", None)
        seen += 1
        if loaded is None or seen > 16:
            raise TypeError("BoundedHttpToolsProtocol serves an ordercancel App only")
    return loaded


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """Count each request head's bytes from where it begins, time it from its first byte, bound the rest.

    Most heads arrive whole in one read smaller than the bound: for them the cost is a few
    attribute writes and a look at the Transfer-Encoding; no timer is ever set.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = served_app(self.config.loaded_app)
        self._timeout = app.body_timeout
        self._default_headers = app.default_headers
        self._refusal = app.refusal
        # The cap is ours (see connection_made): uvicorn's own would answer 503 to whole requests.
        self._cap = self.limit_concurrency
        self.limit_concurrency = None
        self._server = _SERVERS.get(self.server_state) or _SERVERS.setdefault(self.server_state, _Connections())
        self._in_head = True  # the next bytes belong to a request head
        self._head_started = False  # the parser has seen the head's first byte
        self._head_bytes = 0  # bytes of a head carried over from earlier reads
        self._began_here = False  # the current head began in the read being parsed
        self._big_read = False  # that read is larger than a head may be
        self._stopped = False  # nothing more is read
        self._over_cap = False
        self._pending: bytes | None = None  # a refusal to write once the answers before it are out
        self._head_timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        waiting = self._server.waiting
        if self._cap is not None and len(self.connections) > self._cap:
            self._server.warn_cap_reached(self._cap, self.loop.time())
            if waiting:
                idle = next(iter(waiting))  # the longest idle
                del waiting[idle]
                idle.transport.close()
            else:
                self._over_cap = True  # answered 503 when its head arrives, or closed in a second
                self._head_timer = self.loop.call_later(1.0, self.transport.close)
                return
        waiting[self] = None
        # A connection that never sends its first head is cut off too.
        self._head_timer = self.loop.call_later(self._timeout, self._refuse, 408, "Request Timeout")

    def data_received(self, data: bytes) -> None:
        if self._stopped:
            self.flow.pause_reading()
            return
        if self._over_cap:
            self._refuse(503, "Service Unavailable", (b"retry-after", b"1"))
            return
        if self._in_head and self._head_started:
            # A head carried over from an earlier read: its bytes up to its end are in this read.
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, "Request Header Fields Too Large")
                return
        if not self._feed(data):
            return
        if self._in_head and self._head_started and self._began_here:
            # A head begun in this read and not complete: the parser holds its whole lines,
            # the rest of it is what follows the read's last line end.
            self._head_bytes = self._head_size() + len(data) - (data.rfind(b"\r\n") + 2)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse(431, "Request Header Fields Too Large")
                return
        if self._in_head and self._head_started and self._head_timer is None:
            self._head_timer = self.loop.call_later(self._timeout, self._refuse, 408, "Request Timeout")

    def _feed(self, data: bytes) -> bool:
        """Parse a read; return whether the connection still reads."""
        self._began_here, self._big_read = False, len(data) > MAX_HEAD_BYTES
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._stop()  # not reached: an upgrade is refused in on_headers_complete, which stops the parser
            return False
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _Stop):
                self._stop()
            else:
                self.send_400_response("Invalid HTTP request received.")
            return False
        return True

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started, self._began_here, self._head_bytes = True, True, 0

    def on_headers_complete(self) -> None:
        if self._big_read and self._began_here and self._head_size() > MAX_HEAD_BYTES:
            # Only a read larger than the bound can hold a head past it: smaller ones cost nothing here.
            self._refuse(431, "Request Header Fields Too Large")
            raise _Stop()
        self._in_head = False
        self._cancel_timer()
        self._server.waiting.pop(self, None)
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy and len(self.pipeline) >= MAX_PIPELINED:
            # Enough queued: answer those, then close; the client sends the rest again.
            self.pipeline[0][0].keep_alive = False
            raise _Stop()
        refusal = self._refusal_of_head()
        if refusal is None:
            super().on_headers_complete()
            return
        served, self.app = self.app, self._refusal(*refusal)
        try:
            super().on_headers_complete()
        finally:
            self.app = served
        self.cycle.keep_alive, self.cycle.more_body = False, False
        raise _Stop()  # its body (or what follows an upgrade) is never read as a request

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # What comes next on this connection is the next request's head.
        self._in_head, self._head_started, self._head_bytes = True, False, 0

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._pending is not None and self.cycle.response_complete:
            self._write_and_close(self._pending)
        elif not self.pipeline and not self._stopped and not self.transport.is_closing():
            self._server.waiting[self] = None  # idle: the first to make room when the cap is reached

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            # A client that does not read its answers: it has the body's time to start again.
            self._write_timer = self.loop.call_later(self._timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self._server.waiting.pop(self, None)
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        self._refuse(400, "Bad Request")

    def _refusal_of_head(self) -> tuple[int, str] | None:
        if self.parser.should_upgrade():
            return 400, "Bad Request"  # no WebSocket, no h2c: what follows is not HTTP/1.1 we read
        codings = [value for name, value in self.headers if name == b"transfer-encoding"]
        if codings and codings != [b"chunked"]:
            return 501, "Not Implemented"  # RFC 9112 6.1: a coding we do not know
        return None

    def _head_size(self) -> int:
        """The bytes of the current head's request line and complete headers, as parsed."""
        return len(self.url) + _LINE_BYTES + sum(len(name) + len(value) + _HEADER_BYTES for name, value in self.headers)

    def _stop(self) -> None:
        """Read nothing more; the connection closes after the answers it owes (or their deadline)."""
        self._stopped = True
        self.flow.pause_reading()
        self._server.waiting.pop(self, None)
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._timeout, self.transport.abort)

    def _cancel_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, reason: str, *extra: tuple[bytes, bytes]) -> None:
        """Answer a refusal decided before there is a request to hand the app, and close.

        Answers owed to requests before it go first: the refusal waits for them.
        """
        self._cancel_timer()
        self._stop()
        if self.transport.is_closing():
            return
        body = reason.encode()
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            *extra,
            *self._default_headers,
            (b"x-request-id", os.urandom(16).hex().encode()),
        ]
        head = f"HTTP/1.1 {status} {reason}\r\n".encode() + b"".join(b"%s: %s\r\n" % pair for pair in headers)
        answer = head + b"\r\n" + body
        if self.cycle is not None and not self.cycle.response_complete:
            self._pending = answer
        else:
            self._write_and_close(answer)

    def _write_and_close(self, answer: bytes) -> None:
        self.transport.write(answer)
        self.transport.close()
