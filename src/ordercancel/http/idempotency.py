"""Idempotency-Key on the cancel endpoints (draft-ietf-httpapi-idempotency-key-header-07).

The store keeps each key's first completed outcome in the same transaction as the change it
made; this module reads the header, says what a request asks (its fingerprint, which a reuse of
the key must match), and answers 409 at once to a second request of a key that this process is
still working on. A request to another process waits for the first one's transaction instead
(the key is unique in the database) and then gets its outcome again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Awaitable, Callable

from ordercancel.domain import InvalidIdempotencyKey

HEADER = "idempotency-key"
REPLAYED_HEADER = (b"idempotent-replayed", b"true")
#: Expired keys forgotten by one statement, the most statements of one sweep, the seconds between sweeps.
SWEEP_LIMIT = 500
SWEEP_BATCHES = 100
SWEEP_EVERY = 60.0

_VISIBLE = re.compile(r"[\x21-\x7e]{1,255}\Z")
#: An sf-string (RFC 8941, 3.3.3): printable ASCII in quotes, a backslash escaping a quote or itself.
_SF_STRING = re.compile(r'"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"\Z')
_ESCAPE = re.compile(r"\\(.)")
log = logging.getLogger("ordercancel.idempotency")


def parse_key(header: str | None) -> str | None:
    """Read an Idempotency-Key, bare or as a structured-field string; None when there is none."""
    if header is None:
        return None
    text = header.strip(" \t")
    if text.startswith('"'):
        string = _SF_STRING.match(text)
        if string is None:
            raise InvalidIdempotencyKey()
        text = _ESCAPE.sub(r"\1", string[1])
    if not _VISIBLE.match(text):
        raise InvalidIdempotencyKey()
    return text


def fingerprint(endpoint: str, *parts: str | None) -> str:
    """Say what a request asks, so that a reuse of its key can be told from a retry."""
    text = "\0".join([endpoint, *("\1" if part is None else part for part in parts)])
    return hashlib.sha256(text.encode()).hexdigest()


class InFlight:
    """The (API key, Idempotency-Key) pairs this process is working on right now."""

    def __init__(self) -> None:
        self._keys: set[tuple[int, str]] = set()

    def enter(self, key_id: int, key: str) -> bool:
        """Take the pair; False when another request of this process holds it."""
        pair = (key_id, key)
        if pair in self._keys:
            return False
        self._keys.add(pair)
        return True

    def leave(self, key_id: int, key: str) -> None:
        self._keys.discard((key_id, key))


class Sweeper:
    """Forget expired keys in the background: a bounded number per sweep, one sweep a minute."""

    def __init__(self, prune: Callable[[int], Awaitable[int]], *, every: float = SWEEP_EVERY) -> None:
        self._prune = prune
        self._every = every
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every)
            try:
                for _ in range(SWEEP_BATCHES):  # small statements: requests go between them
                    if await self._prune(SWEEP_LIMIT) < SWEEP_LIMIT:
                        break
            except Exception:  # the next sweep tries again; a request never waits for one
                log.warning("could not forget expired idempotency keys", exc_info=True)
