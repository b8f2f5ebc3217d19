"""The cancellation, written once for every backend: its statements and its steps, free of I/O.

The contract's promise is that the check and the change are one step: the success path is a
single conditional UPDATE, and only when it changes nothing does a second statement, in the
same transaction, find out why. SQLite runs these steps on its writer thread (`sqlite.py`),
PostgreSQL awaits them on a pooled connection (`postgres.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple, Protocol

from ordercancel.domain import (
    OPEN_STATUSES,
    Lookup,
    Order,
    Outcome,
    PaymentStatus,
    ProcessingStarted,
    ProductionStatus,
    RequestError,
    Unauthorized,
    cancellation_refusal,
)

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Attempt:
    """One authenticated cancellation request, as the store sees it."""

    key_id: int
    request_id: str
    #: The order the body names, or the error that made the body unusable.
    target: Lookup | RequestError
    #: The order number to echo when the order is not found (by-number requests only).
    echo: str | None = None


class Store(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the database answers."""

    async def authenticate(self, code_hash: str) -> int | None:
        """Return the id of the active API key with this hash in our environment, or None."""

    async def cancel(self, attempt: Attempt) -> Outcome:
        """Cancel the order if the rules allow, record the attempt, and say what happened."""


_OPEN = ", ".join(f"'{status.value}'" for status in sorted(OPEN_STATUSES))
_KEY_ACTIVE = "EXISTS (SELECT 1 FROM api_keys WHERE id = :key AND revoked_at IS NULL)"


def cancel_statement(column: str, param: str = ":value") -> str:
    """The single conditional write that cancels an order when, and only when, the rules allow."""
    return (
        f"UPDATE orders SET status = '{ProductionStatus.CANCELLED.value}', cancelled_at = :now "
        f"WHERE {column} = {param} AND api_key_id = :key AND status IN ({_OPEN}) "
        f"AND payment_status <> '{PaymentStatus.NOK.value}' AND engineer IS NULL "
        f"AND {_KEY_ACTIVE} RETURNING id, order_id, order_number"
    )


def explain_statement(column: str, param: str = ":value") -> str:
    """Read what a refused cancellation needs to say why: the key, and the order if it is ours."""
    return (
        "SELECT k.revoked_at, o.id, o.order_id, o.order_number, o.status, o.payment_status, "
        f"o.engineer FROM api_keys k LEFT JOIN orders o ON o.{column} = {param} "
        "AND o.api_key_id = k.id WHERE k.id = :key"
    )


def cancel_and_record_statement(column: str, param: str = ":value") -> str:
    """The success path as one statement (PostgreSQL only): cancel, and record the success with it."""
    return (
        f"WITH cancelled AS ({cancel_statement(column, param)}), recorded AS ("
        "INSERT INTO cancellation_attempts (at, api_key_id, order_ref, outcome, request_id) "
        "SELECT :now, :key, id, 0, :request_id FROM cancelled) "
        "SELECT id, order_id, order_number FROM cancelled"
    )


#: Records an attempt only while its key is active, and says so: a key revoked since it was
#: looked up (remembered keys) records nothing and is answered 401, whatever its body said.
RECORD_ATTEMPT = (
    "INSERT INTO cancellation_attempts (at, api_key_id, order_ref, outcome, request_id) "
    f"SELECT :now, :key, CAST(:ref AS INTEGER), :outcome, :request_id WHERE {_KEY_ACTIVE} RETURNING id"
)
AUTHENTICATE = "SELECT id FROM api_keys WHERE code_hash = :hash AND environment = :environment AND revoked_at IS NULL"


def refusal_outcome(lookup: Lookup, echo: str | None, row: Sequence[object] | None) -> tuple[int | None, Outcome]:
    """Turn the explain row of a refused cancellation into its outcome and the order's row id.

    A row whose order turns out to be cancellable (a claim was released in between) yields
    an outcome with no error: the caller tries the cancellation again.
    """
    if row is None or row[0] is not None:
        return None, Outcome(None, None, Unauthorized())
    if row[1] is None:
        return None, Outcome(None, echo, lookup.not_found)
    ref, order_id, number, status, payment, engineer = row[1:]
    order = Order(
        str(order_id),
        str(number),
        ProductionStatus(str(status)),
        PaymentStatus(str(payment)),
        None if engineer is None else str(engineer),
    )
    return int(str(ref)), Outcome(order.order_id, order.order_number, cancellation_refusal(order))


@dataclass(frozen=True, slots=True)
class Statements:
    """The hot path's SQL in one placeholder style (SQLite's :name, or psycopg's %(name)s)."""

    cancel_by_number: str
    explain_by_number: str
    cancel_by_id: str
    explain_by_id: str
    record_attempt: str
    authenticate: str

    @classmethod
    def build(cls, style: Callable[[str], str] = lambda sql: sql) -> Statements:
        return cls(
            style(cancel_statement("order_number")),
            style(explain_statement("order_number")),
            style(cancel_statement("order_id")),
            style(explain_statement("order_id")),
            style(RECORD_ATTEMPT),
            style(AUTHENTICATE),
        )


SQLITE_STATEMENTS = Statements.build()
#: How often a cancellation is retried when the order became cancellable while it was refused.
RETRIES = 3


class Step(NamedTuple):
    """One statement to run; when it reads, the driver sends back its first row (or None)."""

    statement: str
    params: dict[str, object]
    reads: bool = True


Steps = Generator[Step, Sequence[object] | None, Outcome]


def cancellation_steps(attempt: Attempt, now: object, statements: Statements = SQLITE_STATEMENTS) -> Steps:
    """Yield the statements of one cancellation attempt, to run in one transaction; return its outcome.

    The logic lives here once, free of I/O: SQLite runs the steps on its writer thread,
    PostgreSQL awaits them on a pooled connection.
    """
    params: dict[str, object] = {"now": now, "key": attempt.key_id, "request_id": attempt.request_id}
    target = attempt.target
    if isinstance(target, RequestError):
        outcome, ref = Outcome(None, attempt.echo, target), None
    else:
        if target.by_id:
            cancel, explain = statements.cancel_by_id, statements.explain_by_id
        else:
            cancel, explain = statements.cancel_by_number, statements.explain_by_number
        params["value"] = target.value
        for _ in range(RETRIES):
            row = yield Step(cancel, params)
            if row is not None:
                ref, outcome = int(str(row[0])), Outcome(str(row[1]), str(row[2]))
                break
            ref, outcome = refusal_outcome(target, attempt.echo, (yield Step(explain, params)))
            if outcome.error is not None:
                break
        else:  # the order kept changing under us (claims released and taken again): say so
            outcome = Outcome(outcome.order_id, outcome.order_number, ProcessingStarted())
    if not isinstance(outcome.error, Unauthorized):
        params.update(ref=ref, outcome=outcome.error.code if outcome.error else 0)
        if (yield Step(statements.record_attempt, params)) is None:
            outcome = Outcome(None, None, Unauthorized())
    return outcome
