"""The cancellation, written once for every backend: its statements and its steps, free of I/O.

The contract's promise is that the check and the change are one step: the success path is a
single conditional UPDATE, and only when it changes nothing does a second statement, in the
same transaction, find out why. SQLite runs these steps on its writer thread (`sqlite.py`),
PostgreSQL awaits them on a pooled connection (`postgres.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from ordercancel.domain import (
    CUSTOMER_CANCELLATION,
    REFUSALS,
    CancellationRule,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
    Lookup,
    Order,
    Outcome,
    PaymentStatus,
    ProcessingStarted,
    ProductionStatus,
    RequestError,
    Unauthorized,
)
from ordercancel.storage.database import as_utc

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
    #: Why the caller cancels, and a note of theirs (both optional, both kept with the order).
    reason: str | None = None
    note: str | None = None
    #: The caller's Idempotency-Key, and the fingerprint of what it asks (see http/idempotency.py).
    idempotency_key: str | None = None
    fingerprint: str = ""
    #: The cancellation window that binds the caller (the key's own, else the setting's; None: none).
    window: timedelta | None = None


class Caller(NamedTuple):
    """An active API key as the edge needs it: its row id, its own rate policy and cancellation window."""

    key_id: int
    #: None: ORDERCANCEL_RATE_LIMIT; "none": no limit; else a rate such as 500/second.
    rate_limit: str | None
    #: Seconds; None: ORDERCANCEL_CANCELLATION_WINDOW; 0 (domain.NO_WINDOW): no window for this key.
    cancellation_window: int | None = None


class Store(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise unless the database answers."""

    async def authenticate(self, code_hash: str) -> Caller | None:
        """Return the active API key with this hash in our environment, or None."""

    async def cancel(self, attempt: Attempt) -> Outcome:
        """Cancel the order if the rules allow, record the attempt, and say what happened."""

    async def prune(self, limit: int) -> int:
        """Forget at most `limit` expired Idempotency-Keys; return how many."""


_KEY_ACTIVE = "EXISTS (SELECT 1 FROM api_keys WHERE id = :key AND revoked_at IS NULL)"


def _listed(values: frozenset[ProductionStatus] | frozenset[PaymentStatus]) -> str:
    return ", ".join(f"'{value.value}'" for value in sorted(values))


def cancellable_condition(rule: CancellationRule) -> str:
    """The domain's rule as a SQL condition on an orders row: true exactly when `rule.allows` the order."""
    parts = [f"status IN ({_listed(rule.statuses)})"]
    if rule.refused_payments:
        parts.append(f"payment_status NOT IN ({_listed(rule.refused_payments)})")
    parts.append("engineer IS NULL")
    if rule.windowed:
        # :placed_after is `domain.window_cutoff` in the database's own form, decided by this same
        # conditional write. NULL (no window) makes the comparison NULL, hence TRUE. One use of the
        # parameter: PostgreSQL cannot type a NULL that only `:p IS NULL` would see.
        parts.append("COALESCE(placed_at > :placed_after, TRUE)")
    return " AND ".join(parts)


def cancel_statement(column: str, param: str = ":value") -> str:
    """The single conditional write that cancels an order when, and only when, the rules allow."""
    return (
        f"UPDATE orders SET status = '{ProductionStatus.CANCELLED.value}', cancelled_at = :now, "
        "cancellation_reason = :reason, cancellation_note = :note, cancelled_by_key = :key "
        f"WHERE {column} = {param} AND api_key_id = :key AND {cancellable_condition(CUSTOMER_CANCELLATION)} "
        f"AND {_KEY_ACTIVE} RETURNING id, order_id, order_number"
    )


def recorded_cancel_statement(column: str, param: str = ":value") -> str:
    """The cancellation that also records its success (SQLite): it sets the column a trigger records from."""
    statement = cancel_statement(column, param)
    head = "UPDATE orders SET "
    assert statement.startswith(head)
    return f"{head}cancel_request_id = :request_id, {statement.removeprefix(head)}"


def explain_statement(column: str, param: str = ":value") -> str:
    """Read what a refused cancellation needs to say why: the key, and the order if it is ours."""
    return (
        "SELECT k.revoked_at, o.id, o.order_id, o.order_number, o.status, o.payment_status, "
        f"o.engineer, o.placed_at FROM api_keys k LEFT JOIN orders o ON o.{column} = {param} "
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
    "INSERT INTO cancellation_attempts (at, api_key_id, order_ref, outcome, request_id, replayed) "
    f"SELECT :now, :key, CAST(:ref AS INTEGER), :outcome, :request_id, :replayed WHERE {_KEY_ACTIVE} RETURNING id"
)
#: Take an Idempotency-Key for this request: a new one, or one whose time is up. No row: it is taken.
CLAIM_KEY = (
    "INSERT INTO idempotency_keys (api_key_id, key, fingerprint, created_at, expires_at) "
    "VALUES (:key, :idempotency_key, :fingerprint, :now, :expires) "
    "ON CONFLICT (api_key_id, key) DO UPDATE SET fingerprint = excluded.fingerprint, "
    "outcome = NULL, order_id = NULL, order_number = NULL, order_ref = NULL, created_at = excluded.created_at, "
    "expires_at = excluded.expires_at WHERE idempotency_keys.expires_at <= excluded.created_at "
    "RETURNING id"
)
READ_KEY = (
    "SELECT fingerprint, outcome, order_id, order_number, order_ref FROM idempotency_keys "
    "WHERE api_key_id = :key AND key = :idempotency_key"
)
COMPLETE_KEY = (
    "UPDATE idempotency_keys SET outcome = :outcome, order_id = :order_id, order_number = :order_number, "
    "order_ref = :ref "
    "WHERE api_key_id = :key AND key = :idempotency_key"
)
RELEASE_KEY = "DELETE FROM idempotency_keys WHERE api_key_id = :key AND key = :idempotency_key"
#: Forget expired keys, a bounded number at a time.
PRUNE_KEYS = (
    "DELETE FROM idempotency_keys WHERE id IN "
    "(SELECT id FROM idempotency_keys WHERE expires_at <= :now ORDER BY expires_at LIMIT :limit)"
)
AUTHENTICATE = (
    "SELECT id, rate_limit, cancellation_window FROM api_keys "
    "WHERE code_hash = :hash AND environment = :environment AND revoked_at IS NULL"
)


def caller(row: Sequence[object] | None) -> Caller | None:
    """Read the row of AUTHENTICATE."""
    if row is None:
        return None
    rate, window = row[1], row[2]
    return Caller(int(str(row[0])), None if rate is None else str(rate), None if window is None else int(str(window)))


def instant(value: object) -> datetime | None:
    """Read a timestamp as a driver gives it (SQLite: naive UTC text; PostgreSQL: aware) as aware UTC."""
    return as_utc(value if value is None or isinstance(value, datetime) else str(value))


def refusal_outcome(
    lookup: Lookup, echo: str | None, row: Sequence[object] | None, placed_after: object = None
) -> tuple[int | None, Outcome]:
    """Turn the explain row of a refused cancellation into its outcome and the order's row id.

    A row whose order turns out to be cancellable (a claim was released in between) yields
    an outcome with no error: the caller tries the cancellation again.
    """
    if row is None or row[0] is not None:
        return None, Outcome(None, None, Unauthorized())
    if row[1] is None:
        return None, Outcome(None, echo, lookup.not_found)
    ref, order_id, number, status, payment, engineer, placed_at = row[1:]
    order = Order(
        str(order_id),
        str(number),
        ProductionStatus(str(status)),
        PaymentStatus(str(payment)),
        None if engineer is None else str(engineer),
        placed_at=instant(placed_at),
    )
    refusal = CUSTOMER_CANCELLATION.refusal(order, instant(placed_after))
    return int(str(ref)), Outcome(order.order_id, order.order_number, refusal)


@dataclass(frozen=True, slots=True)
class Statements:
    """The hot path's SQL in one placeholder style (SQLite's :name, or psycopg's %(name)s)."""

    cancel_by_number: str
    explain_by_number: str
    cancel_by_id: str
    explain_by_id: str
    record_attempt: str
    authenticate: str
    claim_key: str
    read_key: str
    complete_key: str
    release_key: str
    prune_keys: str
    #: Whether the cancel statements record a success themselves (SQLite's trigger, migration
    #: 0007): then a success has no record step. They run only while the key is active, in the
    #: transaction that records, so the record step's check of the key would change nothing.
    success_recorded: bool = False

    @classmethod
    def build(cls, style: Callable[[str], str] = lambda sql: sql) -> Statements:
        return cls(
            style(cancel_statement("order_number")),
            style(explain_statement("order_number")),
            style(cancel_statement("order_id")),
            style(explain_statement("order_id")),
            style(RECORD_ATTEMPT),
            style(AUTHENTICATE),
            style(CLAIM_KEY),
            style(READ_KEY),
            style(COMPLETE_KEY),
            style(RELEASE_KEY),
            style(PRUNE_KEYS),
        )


SQLITE_STATEMENTS = replace(
    Statements.build(),
    cancel_by_number=recorded_cancel_statement("order_number"),
    cancel_by_id=recorded_cancel_statement("order_id"),
    success_recorded=True,
)
#: How often a cancellation is retried when the order became cancellable while it was refused.
RETRIES = 3


class Step(NamedTuple):
    """One statement to run; when it reads, the driver sends back its first row (or None)."""

    statement: str
    params: dict[str, object]
    reads: bool = True


Steps = Generator[Step, Sequence[object] | None, Outcome]


def cancellation_steps(
    attempt: Attempt,
    now: object,
    statements: Statements = SQLITE_STATEMENTS,
    *,
    expires: object = None,
    placed_after: object = None,
) -> Steps:
    """Yield the statements of one cancellation attempt, to run in one transaction; return its outcome.

    The logic lives here once, free of I/O: SQLite runs the steps on its writer thread,
    PostgreSQL awaits them on a pooled connection. With an Idempotency-Key, the key is taken in
    the same transaction as the cancellation and its record, and keeps their outcome: a key
    that is already taken answers the outcome it keeps instead (`expires` is when a new key's
    time is up; `placed_after` is the window's cutoff, in the form `now` has, or None).
    """
    params: dict[str, object] = {
        "now": now,
        "placed_after": placed_after,
        "key": attempt.key_id,
        "request_id": attempt.request_id,
        "reason": attempt.reason,
        "note": attempt.note,
        "replayed": False,
        "idempotency_key": attempt.idempotency_key,
        "fingerprint": attempt.fingerprint,
        "expires": expires,
    }
    if attempt.idempotency_key is not None and (yield Step(statements.claim_key, params)) is None:
        return (yield from _told_again(attempt, params, statements))
    outcome, ref = yield from _cancellation(attempt, params, statements)
    if not isinstance(outcome.error, Unauthorized):
        params.update(ref=ref, outcome=outcome.error.code if outcome.error else 0)
        recorded = statements.success_recorded and outcome.error is None  # by the UPDATE itself
        if not recorded and (yield Step(statements.record_attempt, params)) is None:  # the key was revoked meanwhile
            outcome = Outcome(None, None, Unauthorized())
    if attempt.idempotency_key is not None:
        if isinstance(outcome.error, Unauthorized):  # nothing is kept for a key revoked meanwhile
            yield Step(statements.release_key, params, reads=False)
        else:
            params.update(order_id=outcome.order_id, order_number=outcome.order_number)
            yield Step(statements.complete_key, params, reads=False)
    return outcome


def _cancellation(
    attempt: Attempt, params: dict[str, object], statements: Statements
) -> Generator[Step, Sequence[object] | None, tuple[Outcome, int | None]]:
    target = attempt.target
    if isinstance(target, RequestError):
        return Outcome(None, attempt.echo, target), None
    if target.by_id:
        cancel, explain = statements.cancel_by_id, statements.explain_by_id
    else:
        cancel, explain = statements.cancel_by_number, statements.explain_by_number
    params["value"] = target.value
    for _ in range(RETRIES):
        row = yield Step(cancel, params)
        if row is not None:
            return Outcome(str(row[1]), str(row[2])), int(str(row[0]))
        ref, outcome = refusal_outcome(target, attempt.echo, (yield Step(explain, params)), params["placed_after"])
        if outcome.error is not None:
            return outcome, ref
    # The order kept changing under us (claims released and taken again): say so.
    return Outcome(outcome.order_id, outcome.order_number, ProcessingStarted()), ref


def _told_again(attempt: Attempt, params: dict[str, object], statements: Statements) -> Steps:
    """Answer a request whose Idempotency-Key is taken: the outcome it keeps, 409 or 422."""
    row = yield Step(statements.read_key, params)
    error: RequestError | None
    ref = None
    if row is None or row[0] != attempt.fingerprint:
        outcome = Outcome(None, None, IdempotencyKeyReused())
    elif row[1] is None:  # taken by a transaction that has not finished
        outcome = Outcome(None, None, IdempotencyKeyInFlight())
    else:
        code = int(str(row[1]))
        error = None if code == 0 else REFUSALS[code]()
        order_id, number = (None if value is None else str(value) for value in row[2:4])
        ref = None if row[4] is None else int(str(row[4]))
        outcome = Outcome(order_id, number, error, replayed=True)
    params.update(ref=ref, outcome=outcome.error.code if outcome.error else 0, replayed=outcome.replayed)
    if (yield Step(statements.record_attempt, params)) is None:  # the key was revoked meanwhile
        return Outcome(None, None, Unauthorized())
    return outcome
