"""Fair use at the edge: a rate limit per API code, and a throttle on failed authentication.

Both count with the `limits` library in fixed windows. The rate limit counts in this process's
memory by default or in Redis (`ORDERCANCEL_RATE_LIMIT_STORAGE`), where one limit holds across
every worker and machine. It may not take the service down with it: when the storage fails,
requests are served (fail open), the health check says `degraded`, a metric counts it, and the
storage is left alone for `RETRY_STORAGE_AFTER` seconds so that every request does not wait for
it to fail again. The throttle counts in memory always: it is asked before every look-up, and a
round trip to Redis for each request would cost more than the look-up it saves.

The counts go through the storage's own `incr` and `get_expiry`: one call for the count, one for
the window's end, where the library's `FixedWindowRateLimiter` needs two more (measured:
bench/fairuse_cost.py) to say the same.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from limits.aio.storage import MemoryStorage, Storage
from limits.storage import storage_from_string

from ordercancel.config import UNLIMITED, parse_rate

#: Seconds the storage is bypassed after it failed, before it is tried again.
RETRY_STORAGE_AFTER = 1.0
#: Seconds a Redis storage may take to connect or to answer one command.
STORAGE_TIMEOUT = 0.25

log = logging.getLogger("ordercancel.fairuse")


def redis_storage(url: str) -> Storage:
    """Open (lazily) the Redis storage a `redis://HOST:PORT/DB` URL names, with bounded waits."""
    storage = storage_from_string("async+" + url, connect_timeout=STORAGE_TIMEOUT, stream_timeout=STORAGE_TIMEOUT)
    if not isinstance(storage, Storage):  # pragma: no cover - the async+ scheme always gives one
        raise TypeError(f"no asynchronous storage for {url!r}")
    return storage


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the limiter says of one request: whether it may go on, and the headers that say so."""

    allowed: bool
    headers: list[tuple[bytes, bytes]]
    retry_after: int = 0


ALLOWED = Verdict(True, [])


class FairUse:
    """The rate limits of one process, over the storage the settings name."""

    def __init__(
        self,
        *,
        rate_limit: str | None,
        auth_failures: int,
        storage_url: str | None,
        on_storage_error: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._default = None if rate_limit is None else parse_rate(rate_limit)
        self._auth_failures = parse_rate(f"{auth_failures}/minute")
        self._storage = MemoryStorage() if storage_url is None else redis_storage(storage_url)
        self._failures = MemoryStorage()
        self._on_storage_error = on_storage_error
        self._clock = clock
        self._failed_at = -math.inf

    @property
    def degraded(self) -> bool:
        """Whether the storage failed within the last few seconds (the health check says so)."""
        return self._clock() - self._failed_at < 5 * RETRY_STORAGE_AFTER

    async def admit_key(self, code_hash: str, policy: str | None) -> Verdict:
        """Count one request of an API key against its limit (its own policy, else the setting).

        The count is keyed by the code's hash, not its row id: row ids repeat across deployments
        (the sandbox's and production's databases) that may share one Redis.
        """
        if policy == UNLIMITED:
            return ALLOWED
        item = self._default if policy is None else parse_rate(policy)
        if item is None or not self._storage_usable():
            return ALLOWED
        key = item.key_for("key", code_hash)
        try:
            count = await self._storage.incr(key, item.get_expiry())
            ends = await self._storage.get_expiry(key)
        except Exception as error:
            self._storage_failed(error)
            return ALLOWED
        seconds_left = max(1, math.ceil(ends - time.time()))
        headers = [
            (b"ratelimit-policy", f'"default";q={item.amount};w={item.get_expiry()}'.encode()),
            (b"ratelimit", f'"default";r={max(0, item.amount - count)};t={seconds_left}'.encode()),
        ]
        if count <= item.amount:
            return Verdict(True, headers)
        return Verdict(False, [*headers, (b"retry-after", str(seconds_left).encode())], seconds_left)

    async def address_throttled(self, address: str | None) -> Verdict:
        """Refuse an address that failed authentication too often in this minute, before any look-up."""
        if address is None:
            return ALLOWED
        key = self._auth_failures.key_for("auth", address)
        if await self._failures.get(key) < self._auth_failures.amount:
            return ALLOWED
        seconds_left = max(1, math.ceil(await self._failures.get_expiry(key) - time.time()))
        return Verdict(False, [(b"retry-after", str(seconds_left).encode())], seconds_left)

    async def authentication_failed(self, address: str | None) -> None:
        """Count a 401 against the address that earned it."""
        if address is not None:
            await self._failures.incr(self._auth_failures.key_for("auth", address), self._auth_failures.get_expiry())

    def _storage_usable(self) -> bool:
        return self._clock() - self._failed_at >= RETRY_STORAGE_AFTER

    def _storage_failed(self, error: Exception) -> None:
        if self._storage_usable():  # one line per outage window, not one per request
            log.warning(
                "rate-limit storage failed; serving without limits",
                extra={"fields": {"error": f"{type(error).__name__}: {error}"}},
            )
        self._failed_at = self._clock()
        self._on_storage_error()
