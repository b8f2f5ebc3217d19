"""A small ASGI core: requests, responses, routing and the lifespan, with no framework.

The service has a handful of routes and a hot path measured in microseconds; a framework
layer would cost more per request than the cancellation itself (see the README).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Handler = Callable[["Request"], Awaitable["Response"]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("ordercancel")

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")


class RequestIds:
    """Unique request ids without a system call each: a random per-process prefix and a counter.

    32 hex characters, as `os.urandom(16).hex()` gave: unique within the process by the counter,
    across processes by the random 64-bit prefix (a forked child draws its own). The counter
    starts at a random offset, so an id does not tell how many requests the process has served.
    """

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._count = itertools.count(int.from_bytes(os.urandom(4)))

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


new_request_id = RequestIds()


class BodyTooLarge(Exception):
    """The request body is larger than we read."""


class BodyTimeout(Exception):
    """The client did not send its whole body in time."""


class ClientGone(Exception):
    """The client disconnected before its request was read."""


class BodyDeadlines:
    """Time out slow request bodies by sweeping a few times a second, not by a timer per request.

    `asyncio.timeout` costs a timer handle and a heap push and pop per request (~6 us, several
    per cent of a cancellation); the deadline here is the same, give or take one sweep.
    """

    SWEEP_SECONDS = 0.25

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._reading: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweeping_loop: asyncio.AbstractEventLoop | None = None

    async def read(self, body: Awaitable[T]) -> T:
        """Await the body; raise BodyTimeout if it has not arrived by the deadline."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._reading[task] = loop.time() + self.timeout
        if self._sweeper is None or self._sweeping_loop is not loop:  # an app may outlive its loop
            self._sweeping_loop = loop
            self._sweeper = loop.call_later(self.SWEEP_SECONDS, self._sweep, loop)
        try:
            return await body
        except asyncio.CancelledError:
            # Only the sweep's own cancellation becomes a timeout; any other goes on up.
            if task not in self._expired or task.uncancel() > 0:
                raise
            raise BodyTimeout() from None
        finally:
            del self._reading[task]
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in self._reading.items():
            if deadline <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._sweeper = loop.call_later(self.SWEEP_SECONDS, self._sweep, loop) if self._reading else None


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    client: str | None
    request_id: str
    path_params: dict[str, str]
    _receive: Receive
    _max_body: int
    _deadlines: BodyDeadlines
    #: The API key's row id once a handler has authenticated the request (for the logs).
    key_id: int | None = None
    #: Whether the body has been asked for (which sends a client that expects it "100 Continue").
    body_asked: bool = False
    #: Whether the whole body has been received.
    body_complete: bool = False

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    async def body(self) -> bytes:
        """Read the whole body, refusing past the size limit without reading further."""
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max_body:
            raise BodyTooLarge()
        self.body_asked = True
        return await self._deadlines.read(self._read())

    async def _read(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            chunk = message.get("body", b"")
            self.body_complete = not message.get("more_body", False)
            size += len(chunk)
            if size > self._max_body:
                raise BodyTooLarge()
            chunks.append(chunk)
            if self.body_complete:
                return b"".join(chunks)

    async def drain(self, limit: int) -> bool:
        """Read and drop what is left of the body, up to `limit` bytes and the body's deadline.

        Return whether the body ended, so that the connection can stay open for the next request.
        """
        if "content-length" not in self.headers and "transfer-encoding" not in self.headers:
            return True  # no body at all
        declared = self.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return False  # known to be too costly: not a byte of it is read
        if not self.body_asked and _expects_continue(self.headers.get("expect", "")):
            return False  # the client waits for our word before it sends the body: it will not come
        try:
            await self._deadlines.read(self._drop(limit))
        except (BodyTimeout, ClientGone):
            return False
        return self.body_complete

    async def _drop(self, limit: int) -> None:
        dropped = 0
        while dropped <= limit:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            dropped += len(message.get("body", b""))
            if not message.get("more_body", False):
                self.body_complete = True
                return


def _expects_continue(expect: str) -> bool:
    """Tell whether any of the request's Expect values (repeated headers are joined by commas) is 100-continue."""
    return "100-continue" in (part.strip() for part in expect.lower().split(","))


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: bytes = b"text/plain; charset=utf-8"
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    #: The code the body carries (0 for a cancellation, else requestError.code), for the observers.
    outcome: int | None = None
    #: The exception that turned this response into a failure, for the observers.
    failure: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """A path (with {name} placeholders) and its handler for each method."""

    path: str
    methods: dict[str, Handler]

    def pattern(self) -> re.Pattern[str]:
        # A parameter never holds a control character (a NUL is refused here, not by a database).
        return re.compile(re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/\\x00-\\x1f\\x7f]+)", re.escape(self.path)) + r"\Z")


_BODY_FAILURES = {BodyTooLarge: (413, "Payload Too Large"), BodyTimeout: (408, "Request Timeout")}

Fallback = Callable[[Request, int, str], Response]
Observer = Callable[[Request, Response, float], None]


class App:
    """Dispatch HTTP requests to routes; run the lifespan hooks; never leak a traceback."""

    #: The most of an unread request body dropped to keep its connection open (see below).
    DRAIN_BYTES = 1024 * 1024

    def __init__(
        self,
        routes: Iterable[Route],
        *,
        error: Fallback,
        on_startup: Iterable[Callable[[], Awaitable[None]]] = (),
        on_shutdown: Iterable[Callable[[], Awaitable[None]]] = (),
        observers: Iterable[Observer] = (),
        default_headers: Iterable[tuple[bytes, bytes]] = (),
        max_body: int = 64 * 1024,
        body_timeout: float = 10.0,
        max_concurrency: int = 1024,
    ) -> None:
        self._exact: dict[str, Route] = {}
        self._patterns: list[tuple[re.Pattern[str], Route]] = []
        for route in routes:
            if "{" in route.path:
                self._patterns.append((route.pattern(), route))
            else:
                self._exact[route.path] = route
        self._error = error
        self._on_startup = list(on_startup)
        self._on_shutdown = list(on_shutdown)
        self._observers = list(observers)
        self._default_headers = list(default_headers)
        self._max_body = max_body
        self._deadlines = BodyDeadlines(body_timeout)
        self._max_concurrency = max_concurrency
        self._in_flight = 0

    @property
    def body_timeout(self) -> float:
        """The seconds a client has to send a request body (and, in protocol.py, a head)."""
        return self._deadlines.timeout

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every answer carries, for answers written before there is a request."""
        return list(self._default_headers)

    def refusal(self, status: int, reason: str) -> AsgiApp:
        """Return an ASGI app that answers any request with this refusal and closes, unread and unrouted."""

        async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
            await self._http(scope, receive, send, refusal=(status, reason))

        return refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    for hook in self._on_startup:
                        await hook()
                except Exception as error:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(error)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for hook in self._on_shutdown:
                    await hook()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _route(self, path: str) -> tuple[Route, dict[str, str]] | None:
        route = self._exact.get(path)
        if route is not None:
            return route, {}
        for pattern, candidate in self._patterns:
            match = pattern.match(path)
            if match:
                return candidate, match.groupdict()
        return None

    async def _http(self, scope: Scope, receive: Receive, send: Send, refusal: tuple[int, str] | None = None) -> None:
        started = time.perf_counter()
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        given_id = headers.get("x-request-id", "")
        client = scope.get("client")
        request = Request(
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            client=client[0] if client else None,
            request_id=given_id if _REQUEST_ID.match(given_id) else new_request_id(),
            path_params={},
            _receive=receive,
            _max_body=self._max_body,
            _deadlines=self._deadlines,
        )
        if refusal is None:
            response = await self._respond(request)
            if not request.body_complete and not await self._drains_the_rest(request, response.status):
                response.headers.append((b"connection", b"close"))
        else:
            response = self._error(request, *refusal)
            response.headers.append((b"connection", b"close"))
        response.headers.extend(self._default_headers)
        response.headers.append((b"x-request-id", request.request_id.encode()))
        await send(
            {
                "type": "http.response.start",
                "status": response.status,
                "headers": [
                    (b"content-type", response.content_type),
                    (b"content-length", str(len(response.body)).encode()),
                    *response.headers,
                ],
            }
        )
        await send({"type": "http.response.body", "body": response.body})
        elapsed = time.perf_counter() - started
        for observe in self._observers:
            observe(request, response, elapsed)

    async def _drains_the_rest(self, request: Request, status: int) -> bool:
        """Tell whether the connection can stay open after a response whose request body was not read.

        A body left unread (a refusal answered before it was read, or past the size limit) is
        drained up to `DRAIN_BYTES`, within the body's deadline. Closing a socket that still
        holds unread bytes makes the kernel send a reset, which can destroy the answer before the
        client reads it; uvicorn would drain it too, but without a bound on bytes or time, so a
        1 GB upload or a client trickling its body could hold the connection forever.
        """
        if status == 408:
            return False  # the client is too slow to drain
        return await request.drain(self.DRAIN_BYTES)

    async def _respond(self, request: Request) -> Response:
        found = self._route(request.path)
        if found is None:
            return self._error(request, 404, "Not Found")
        route, request.path_params = found
        handler = route.methods.get(request.method)
        if handler is None:
            response = self._error(request, 405, "Method Not Allowed")
            response.headers.append((b"allow", ", ".join(route.methods).encode()))
            return response
        if self._in_flight >= self._max_concurrency:
            response = self._error(request, 503, "Service Unavailable")
            response.headers.append((b"retry-after", b"1"))
            return response
        self._in_flight += 1
        try:
            return await self._handle(handler, request)
        finally:
            self._in_flight -= 1

    async def _handle(self, handler: Handler, request: Request) -> Response:
        try:
            return await handler(request)
        except ClientGone:
            return Response(499)
        except (BodyTooLarge, BodyTimeout) as failure:
            status, reason = _BODY_FAILURES[type(failure)]
            return self._error(request, status, reason)
        except Exception as error:
            log.exception("request %s failed", request.request_id)
            response = self._error(request, 500, "Internal Server Error")
            response.failure = error
            return response
