"""A store wrapper that remembers, per process and for a few seconds, which API codes are active."""

from __future__ import annotations

import time
from collections.abc import Callable

from ordercancel.domain import Outcome
from ordercancel.storage.steps import Attempt, Caller, Store


class RememberedKeys:
    """A store that remembers for a few seconds which API-code hashes belong to an active key.

    The look-up before the body is read is then a dict access instead of a database round trip
    (on PostgreSQL, one of the two a cancellation needs). It is only ever a hint: every
    cancellation checks again, in its own conditional statement, that the key is active, so a
    key revoked a moment ago still cannot cancel anything: its requests are answered 401 by that
    check, and a refusal recorded for it is recorded only while the key is active. A refusal
    that needs no database (a body too large or too slow) must not rest on the memory alone:
    it asks `authenticate_now`. Unknown codes are never remembered, so strangers cannot fill
    the memory.
    """

    def __init__(
        self, store: Store, *, seconds: float, capacity: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._store = store
        self._seconds = seconds
        self._capacity = capacity
        self._clock = clock
        self._known: dict[str, tuple[Caller, float]] = {}

    def forget(self, code_hash: str) -> None:
        self._known.pop(code_hash, None)

    async def start(self) -> None:
        await self._store.start()

    async def close(self) -> None:
        await self._store.close()

    async def ping(self) -> None:
        await self._store.ping()

    async def cancel(self, attempt: Attempt) -> Outcome:
        return await self._store.cancel(attempt)

    async def prune(self, limit: int) -> int:
        return await self._store.prune(limit)

    async def authenticate(self, code_hash: str) -> Caller | None:
        now = self._clock()
        known = self._known.get(code_hash)
        if known is not None and known[1] > now:
            return known[0]
        found = await self._store.authenticate(code_hash)
        if found is None:
            self._known.pop(code_hash, None)
            return None
        if len(self._known) >= self._capacity:
            self._known.clear()  # rare (that many active keys in a few seconds): start afresh
        self._known[code_hash] = (found, now + self._seconds)
        return found


async def authenticate_now(store: Store, code_hash: str) -> Caller | None:
    """Look an API code up in the database itself, past whatever the store remembers of it."""
    if isinstance(store, RememberedKeys):
        store.forget(code_hash)
    return await store.authenticate(code_hash)
