"""The cancellation hot path on PostgreSQL: psycopg 3 with an async connection pool.

The statements and the decisions are store.py's; this module only runs them, with one
addition: the success path goes first as a single statement (the conditional UPDATE and the
INSERT of its record, joined by a WITH), so a successful cancellation is one atomic round trip.
Only when that changes nothing do store.py's steps run, in a transaction: the UPDATE again (the
order may have become cancellable meanwhile), the SELECT that says why not, and the record.
Under READ COMMITTED each statement sees the latest committed state anyway, so splitting the
two transactions changes no answer. Every process
keeps `pool_size` connections open; a connection that breaks (the server restarted, a
network blip) is thrown away and replaced by the pool, so the process recovers by itself.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import timedelta

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from ordercancel.config import Environment
from ordercancel.domain import Lookup, Outcome, window_cutoff
from ordercancel.storage.database import utcnow
from ordercancel.storage.steps import (
    Attempt,
    Caller,
    Clock,
    Statements,
    caller,
    cancel_and_record_statement,
    cancellation_steps,
)

#: Seconds a request waits for a free pooled connection before it is answered 500.
POOL_TIMEOUT = 5.0
#: Seconds a new connection may take to be established.
CONNECT_TIMEOUT = 5

_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def pyformat(statement: str) -> str:
    """Turn :name placeholders (SQLite's style) into %(name)s (psycopg's)."""
    return _NAMED.sub(r"%(\1)s", statement.replace("%", "%%"))


STATEMENTS = Statements.build(pyformat)
#: By number, by ID: the cancellation and its record in one statement, one round trip.
CANCEL_AND_RECORD = (
    pyformat(cancel_and_record_statement("order_number")),
    pyformat(cancel_and_record_statement("order_id")),
)


def conninfo(url: str) -> str:
    """Return a libpq connection string for a SQLAlchemy-style PostgreSQL URL."""
    return re.sub(r"\Apostgres(?:ql)?(?:\+\w+)?://", "postgresql://", url)


class PostgresStore:
    """The hot path on PostgreSQL: one transaction per cancellation, on a pooled connection."""

    def __init__(
        self,
        url: str,
        environment: Environment,
        *,
        pool_size: int = 8,
        clock: Clock = utcnow,
        idempotency_ttl: float = 86400.0,
    ) -> None:
        self._environment = environment.value
        self._clock = clock
        self._idempotency_ttl = timedelta(seconds=idempotency_ttl)
        self._pool = AsyncConnectionPool(
            conninfo(url),
            min_size=pool_size,
            max_size=pool_size,
            open=False,
            timeout=POOL_TIMEOUT,
            # Autocommit: a read is one round trip; the cancellation opens its own transaction.
            kwargs={"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, "application_name": "ordercancel"},
            name="ordercancel",
        )

    async def start(self) -> None:
        # Fail the start (and so the process) when the database cannot be reached at all.
        await self._pool.open(wait=True, timeout=POOL_TIMEOUT)

    async def close(self) -> None:
        await self._pool.close()

    async def ping(self) -> None:
        async with self._pool.connection() as connection:
            await connection.execute("SELECT 1 FROM api_keys LIMIT 1")

    async def authenticate(self, code_hash: str) -> Caller | None:
        params = {"hash": code_hash, "environment": self._environment}
        async with self._pool.connection() as connection:
            row = await (await connection.execute(STATEMENTS.authenticate, params)).fetchone()
        return caller(row)

    async def cancel(self, attempt: Attempt) -> Outcome:
        now = self._clock()
        placed_after = window_cutoff(now, attempt.window)
        async with self._pool.connection() as connection:
            target = attempt.target
            if isinstance(target, Lookup) and attempt.idempotency_key is None:
                # The success path first, as one statement: measured 1.9x the throughput of the
                # same steps in an explicit transaction (BEGIN, UPDATE, INSERT, COMMIT).
                params = {
                    "now": now,
                    "key": attempt.key_id,
                    "request_id": attempt.request_id,
                    "value": target.value,
                    "reason": attempt.reason,
                    "note": attempt.note,
                    "placed_after": placed_after,
                }
                cursor = await connection.execute(CANCEL_AND_RECORD[target.by_id], params)
                row = await cursor.fetchone()
                if row is not None:
                    return Outcome(str(row[1]), str(row[2]))
            # Refused (or the body named no order, or an Idempotency-Key is to be taken): the
            # shared steps, in one transaction.
            async with connection.transaction():
                return await _run(connection, attempt, now, now + self._idempotency_ttl, placed_after)

    async def prune(self, limit: int) -> int:
        async with self._pool.connection() as connection:
            cursor = await connection.execute(STATEMENTS.prune_keys, {"now": self._clock(), "limit": limit})
            return cursor.rowcount


async def _run(
    connection: AsyncConnection[tuple[object, ...]],
    attempt: Attempt,
    now: object,
    expires: object,
    placed_after: object = None,
) -> Outcome:
    steps = cancellation_steps(attempt, now, STATEMENTS, expires=expires, placed_after=placed_after)
    row: Sequence[object] | None = None
    try:
        while True:
            step = steps.send(row)
            cursor = await connection.execute(step.statement, step.params)
            row = await cursor.fetchone() if step.reads else None
    except StopIteration as done:
        outcome: Outcome = done.value
        return outcome
