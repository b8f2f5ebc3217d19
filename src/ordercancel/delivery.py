"""The webhook dispatcher: claims due deliveries, signs and sends them, and records every attempt.

Every `ordercancel serve` process runs one; `ordercancel dispatch` runs one alone. Each turn
records the attempts that finished and claims as many due deliveries as it has free slots,
in one transaction (storage/outbox.py): a claim is a lease, so dispatchers never send one
delivery at once, and one that dies holding a lease only delays those deliveries until the
lease runs out, when another dispatcher (or itself, restarted) sends them again. Delivery is
at least once: a receiver may see an event twice, always with the same webhook-id.

Every connection is checked where it is made: a host that resolves to a loopback, private,
link-local, multicast or otherwise non-public address is refused (the guarded network backend
below), unless ORDERCANCEL_WEBHOOK_ALLOW_PRIVATE=1. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx
import orjson
from sqlalchemy import Engine

from ordercancel.client._version import __version__
from ordercancel.client.webhooks import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from ordercancel.config import Environment, Settings
from ordercancel.events import (
    DEFAULT_SCHEDULE,
    DEFAULT_TIMEOUT,
    InvalidSubscription,
    check_url,
    forbidden_address,
    payload,
    retry_delay,
)
from ordercancel.storage import outbox
from ordercancel.storage.database import utcnow

log = logging.getLogger("ordercancel.webhooks")

USER_AGENT = f"ordercancel/{__version__}"
#: Most of an answer read (and then dropped): a receiver's answer matters only by its status.
MAX_ANSWER = 64 * 1024
#: Deliveries one dispatcher has in flight at once.
CONCURRENCY = 32
#: Connection pools a dispatcher spreads its requests over, each request to the least busy. httpcore's
#: pool looks at every connection it holds whenever it hands one out or takes one back, and for each
#: idle one counts them all again: its CPU per request grows with the square of its connections. Eight
#: pools hold at most four connections each to one receiver (the slots' 32 between them).
POOLS = 8
#: Seconds an idle dispatcher waits before it looks for due deliveries again.
POLL_SECONDS = 0.5
#: Seconds between a busy dispatcher's transactions, at the least, unless half its slots' results
#: are in: the results and new events of that time are recorded and claimed together.
LINGER_SECONDS = 0.02
#: Longest error text kept with an attempt.
MAX_ERROR = 300
#: How an attempt's outcome is counted: delivered, retried later, failed for good, endpoint gone.
OUTCOMES = ("delivered", "retried", "failed", "gone")

Resolver = Callable[[str, int], Any]


class ForbiddenAddress(httpcore.ConnectError):
    """The webhook's host resolves to an address no webhook may be sent to."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address a host name resolves to (a literal address is itself)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refused_addresses(addresses: Iterable[str]) -> list[str]:
    """The addresses among these that no webhook may be sent to."""
    return [address for address in addresses if forbidden_address(address)]


class PooledStream(httpcore.AsyncNetworkStream):
    """httpcore's stream, answering the one question its pool asks of every connection at every request cheaply.

    Each time the pool hands out or takes back a connection it asks every idle one whether its
    socket is readable (the server closed it). httpcore's AnyIO stream finds the socket through
    AnyIO's typed attributes, which build a dict and call getpeername() each time: with 32
    connections that was most of the dispatcher's CPU. Here the socket is found once, and the
    question is the same poll(2) httpcore asks. Everything else is the inner stream's.
    """

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self._inner = inner
        #: A socket.socket, or asyncio's TransportSocket over one: either has fileno().
        self._socket: Any = inner.get_extra_info("socket")
        self._poll = select.poll()
        if self._socket is not None and self._socket.fileno() >= 0:
            self._poll.register(self._socket.fileno(), select.POLLIN)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        return PooledStream(await self._inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Readable (data or the end of the stream), or closed (its descriptor is -1 then, so the
            # one registered is still this socket's whenever it is polled): either way not reusable.
            return self._socket is None or self._socket.fileno() < 0 or bool(self._poll.poll(0))
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but a connection is made only to addresses a webhook may reach.

    The name is resolved here, checked, and the connection made to the checked address: no
    second look-up can hand over another address in between. TLS still verifies the host name.
    """

    def __init__(self, *, allow_private: bool, resolver: Callable[[str, int], Any] = resolve) -> None:
        self._inner = httpcore.AnyIOBackend()
        self._allow_private = allow_private
        self._resolve = resolver

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        if self._allow_private:
            return PooledStream(await self._inner.connect_tcp(host, port, timeout, local_address, socket_options))
        try:
            addresses: list[str] = await self._resolve(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"{host} does not resolve: {error}") from None
        refused = refused_addresses(addresses)
        if refused or not addresses:
            raise ForbiddenAddress(f"{host} resolves to {', '.join(refused) or 'nothing'}: not a public address")
        failure: Exception | None = None
        for address in addresses:
            try:
                return PooledStream(
                    await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:  # pragma: no cover: httpx never asks for one here
        raise httpcore.ConnectError("webhooks are not sent over Unix sockets")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def guarded_transport(
    *, allow_private: bool, resolver: Callable[[str, int], Any] = resolve, ssl_context: ssl.SSLContext | None = None
) -> httpx.AsyncHTTPTransport:
    """httpx's own transport over the guarded backend (httpx takes no backend itself: its pool is replaced).

    `ssl_context`: the one the dispatcher's pools share (building one reads the CA bundle: tens of ms).
    """
    context = ssl_context or httpx.create_ssl_context()
    transport = httpx.AsyncHTTPTransport(retries=0, verify=context)  # given the context, it builds none
    # httpx (pinned <0.30) builds its pool in __init__ and sends through `_pool`: the SSRF test at
    # connect time (tests/test_webhook_delivery.py) fails if that ever stops being so.
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=context,
        max_connections=CONCURRENCY * 2,
        max_keepalive_connections=CONCURRENCY,
        keepalive_expiry=5.0,
        network_backend=GuardedBackend(allow_private=allow_private, resolver=resolver),
    )
    return transport


class Dispatcher:
    """One dispatcher: a task on the event loop of the process that runs it."""

    def __init__(
        self,
        engine: Engine,
        *,
        schedule: tuple[float, ...] = DEFAULT_SCHEDULE,
        timeout: float = DEFAULT_TIMEOUT,
        allow_private: bool = False,
        concurrency: int = CONCURRENCY,
        poll: float = POLL_SECONDS,
        clock: Callable[[], datetime] = utcnow,
        uniform: Callable[[float, float], float] = random.uniform,
        on_outcome: Callable[[str], None] = lambda outcome: None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._engine = engine
        self._schedule = schedule
        self._timeout = timeout
        # Past the lease another dispatcher may send the delivery again: well beyond one attempt.
        self._lease = timedelta(seconds=timeout + max(timeout, 5.0))
        self._concurrency = concurrency
        self._poll = poll
        self._clock = clock
        self._uniform = uniform
        self._on_outcome = on_outcome
        if transport is not None:
            self._transports: list[httpx.AsyncBaseTransport] = [transport]
        else:  # each pool as one would be alone; the least busy takes the next request (_post)
            pools, context = max(1, min(POOLS, concurrency)), httpx.create_ssl_context()
            self._transports = [
                guarded_transport(allow_private=allow_private, ssl_context=context) for _ in range(pools)
            ]
        self._clients: list[httpx.AsyncClient] = []
        #: Requests under way in each client's pool.
        self._busy: list[int] = []
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._in_flight: set[asyncio.Task[outbox.Result]] = set()
        #: Results not yet recorded: recorded together once half the slots' worth are in.
        self._finished: list[outbox.Result] = []
        self._batch = max(1, concurrency // 2)
        self._last_exchange = -LINGER_SECONDS
        self._nudged = False
        #: Deliveries sent since the start: the bench and the tests read it.
        self.sent = 0

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: Engine, *, on_outcome: Callable[[str], None] = lambda outcome: None
    ) -> Dispatcher:
        """The dispatcher the settings describe (every serve process runs one; so does `dispatch`)."""
        return cls(
            engine,
            schedule=settings.webhook_schedule,
            timeout=settings.webhook_timeout,
            allow_private=settings.webhook_allow_private,
            on_outcome=on_outcome,
        )

    async def start(self) -> None:
        self._clients = [
            httpx.AsyncClient(
                transport=transport, follow_redirects=False, timeout=self._timeout, headers={"user-agent": USER_AGENT}
            )
            for transport in self._transports
        ]
        self._busy = [0] * len(self._clients)
        self._task = asyncio.create_task(self._run(), name="ordercancel-dispatcher")

    def nudge(self) -> None:
        """Look for due deliveries now rather than at the next poll (an event was just committed)."""
        if not self._nudged:  # one wake-up per linger, however many events come meanwhile
            self._nudged = True
            self._wake.set()

    async def stop(self) -> None:
        """Stop claiming; give the attempts under way a moment, record them, and close."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for client in self._clients:
            await client.aclose()

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                await self._turn()
                failures = 0
            except Exception:  # the database is away, say: keep the results, try again, less and less often
                failures += 1
                if failures == 1 or failures % 20 == 0:
                    log.exception("webhook dispatcher turn failed (%d in a row)", failures)
                await asyncio.sleep(min(self._poll * 2 ** min(failures, 10), 30.0))
            if self._stopping:
                break
            await self._wait()
        # Stopping: what is under way may finish within a second; the rest keep their lease.
        if self._in_flight:
            _, pending = await asyncio.wait(self._in_flight, timeout=1.0)  # _finish collects the done
            for task in pending:
                task.cancel()
        if self._finished:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._exchange, self._finished, 0)

    async def _turn(self) -> None:
        """Record what finished and claim what is due, in one transaction, once there is enough of either.

        Half the slots' results, or the last one in flight, are recorded at once; otherwise the
        dispatcher lingers (LINGER_SECONDS after its last transaction) so that one transaction
        records and claims many deliveries rather than one each.
        """
        free = 0 if self._stopping else self._concurrency - len(self._in_flight)
        finished = self._finished
        full = len(finished) >= self._batch or bool(finished and not self._in_flight)
        if not (full or self._stopping) and time.monotonic() < self._last_exchange + LINGER_SECONDS:
            return  # _wait comes back at the end of the linger
        self._nudged = False  # what it announced is looked for now (a nudge from here on counts again)
        if not finished and (free == 0 or not await asyncio.to_thread(outbox.has_due, self._engine, self._clock())):
            return
        self._finished = []
        self._last_exchange = time.monotonic()
        try:
            work = await asyncio.to_thread(self._exchange, finished, free)
        except BaseException:
            self._finished[:0] = finished  # recorded at the next turn
            raise
        for due in work:
            task = asyncio.create_task(self._attempt(due))
            self._in_flight.add(task)
            task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[outbox.Result]) -> None:
        """Collect an attempt's result (a task's done callback); wake the loop once a batch is ready."""
        self._in_flight.discard(task)
        if task.cancelled():  # stopping: its lease runs out and it is sent again
            return
        self._finished.append(task.result())  # _attempt never raises
        if len(self._finished) >= self._batch or not self._in_flight:
            self._wake.set()

    def _exchange(self, results: list[outbox.Result], limit: int) -> list[outbox.Due]:
        return outbox.settle_and_claim(self._engine, results, now=self._clock(), lease=self._lease, limit=limit)

    async def _wait(self) -> None:
        """Sleep until a batch is ready, a nudge, the end of the linger when something waits, or the poll."""
        self._wake.clear()
        timeout = self._poll
        if self._finished or (self._nudged and len(self._in_flight) < self._concurrency):
            timeout = min(timeout, max(0.0, self._last_exchange + LINGER_SECONDS - time.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wake.wait()

    async def _attempt(self, due: outbox.Due) -> outbox.Result:
        """Send one delivery once; say what came of it (never raises)."""
        body = orjson.dumps(payload(due.event, operator=due.operator))
        timestamp = int(time.time())
        headers = {
            ID_HEADER: due.event.event_id,
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(due.secrets, due.event.event_id, timestamp, body),
            "content-type": "application/json",
        }
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):
                status = await self._post(due.url, body, headers)
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except Exception as failure:  # httpx's errors, and what its stack lets through (a socket closed under anyio)
            error = f"{type(failure).__name__}: {failure}"[:MAX_ERROR]
        else:
            error = None if 200 <= status < 300 else f"answered HTTP {status}"
        latency = round((time.perf_counter() - started) * 1000)
        self.sent += 1
        return self._result(due, status, latency, error)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        busy = self._busy
        pool = busy.index(min(busy))
        busy[pool] += 1
        try:
            async with self._clients[pool].stream("POST", url, content=body, headers=headers) as response:
                read = 0
                async for chunk in response.aiter_raw():
                    read += len(chunk)
                    if read >= MAX_ANSWER:
                        break
                return response.status_code
        finally:
            busy[pool] -= 1

    def _result(self, due: outbox.Due, status: int | None, latency: int, error: str | None) -> outbox.Result:
        at = self._clock()
        delivered = status is not None and 200 <= status < 300
        gone = status == 410
        delay = None if delivered or gone else retry_delay(due.attempts + 1, self._schedule, self._uniform)
        retry_at = None if delay is None else at + timedelta(seconds=delay)
        outcome = "delivered" if delivered else "gone" if gone else "retried" if retry_at else "failed"
        self._on_outcome(outcome)
        if outcome != "delivered":
            log.info(
                "webhook attempt %s",
                outcome,
                extra={"fields": {"event": due.event.event_id, "delivery": due.delivery_id, "error": error}},
            )
        return outbox.Result(
            due.delivery_id,
            at,
            status,
            latency,
            error,
            retry_at,
            delivered,
            due.lease_until,
            due.endpoint_ref if gone else None,
        )


#: Seconds a registration waits for the URL's host to resolve.
RESOLVE_TIMEOUT = 5.0
#: One answer for a host that does not resolve and one that resolves inside: the difference would
#: let an integrator map the platform's internal names.
NOT_PUBLIC = "the webhook URL's host does not resolve to public addresses only"


async def registrable_url(url: str, settings: Settings, *, resolver: Callable[[str, int], Any] = resolve) -> str:
    """Check a webhook URL as it is registered: its form (https in production), then where its host resolves now.

    The address is checked again at every connection (GuardedBackend): a name can change its address.
    """
    checked = check_url(url, https_only=settings.environment is Environment.PRODUCTION)
    if settings.webhook_allow_private:
        return checked
    parts = urlsplit(checked)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            addresses: list[str] = await resolver(parts.hostname or "", parts.port or 443)
    except (OSError, TimeoutError):
        raise InvalidSubscription(NOT_PUBLIC) from None
    if not addresses or refused_addresses(addresses):
        raise InvalidSubscription(NOT_PUBLIC)
    return checked
