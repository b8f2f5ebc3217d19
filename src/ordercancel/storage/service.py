"""Use cases behind the admin CLI and admin HTTP API: API codes and orders.

These are not on the hot path, so they go through SQLAlchemy Core and run unchanged on
every dialect. Every change is one conditional statement, so they race correctly with
cancellations running on other connections.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Row, TextClause, delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from ordercancel import domain
from ordercancel.config import UNLIMITED, Environment, parse_duration, parse_rate
from ordercancel.domain import (
    OPEN_STATUSES,
    OPERATOR_CANCELLATION,
    AlreadyCancelled,
    CancellationReason,
    CancelledBy,
    InvalidOrderField,
    Order,
    PaymentStatus,
    ProcessingStarted,
    ProductionStatus,
    generated_order_number,
    hash_api_code,
    new_order,
    parse_guid,
    payments_before,
    statuses_before,
)
from ordercancel.storage.database import as_utc, utcnow
from ordercancel.storage.schema import (
    FAILED,
    PENDING,
    api_keys,
    cancellation_attempts,
    idempotency_keys,
    orders,
    webhook_deliveries,
    webhook_endpoints,
)
from ordercancel.storage.steps import cancellable_condition

Clock = Callable[[], datetime]
UuidGen = Callable[[], uuid.UUID]


class AdminError(Exception):
    """A use case refused; the message is one line meant for the person who asked."""


class UnknownApiCode(AdminError):
    pass


class OrderNotFound(AdminError):
    pass


class InvalidValue(AdminError):
    pass


class OrderExists(InvalidValue):
    pass


class TransitionRefused(AdminError):
    """The order is not in a state the change may start from; nothing was changed."""


@contextmanager
def _checked() -> Iterator[None]:
    """Turn the domain's refusal of a field into the admin use cases' own."""
    try:
        yield
    except InvalidOrderField as error:
        raise InvalidValue(str(error)) from None


def canonical_api_code(text: str) -> str:
    code = parse_guid(text.strip())
    if code is None:
        raise UnknownApiCode("an API code is a GUID such as 0f8fad5b-d9cb-469f-a165-70867728950e")
    return code


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    created_at: datetime
    revoked_at: datetime | None
    #: The key's own rate policy (None: the setting's; "none": no limit).
    rate_limit: str | None = None
    #: The key's own cancellation window in seconds (None: the setting's; 0: no window).
    cancellation_window: int | None = None


def create_key(
    engine: Engine, environment: Environment, name: str = "", *, clock: Clock = utcnow, uuidgen: UuidGen = uuid.uuid4
) -> str:
    """Issue a new API code; it is returned this once and only its hash is kept."""
    code = str(uuidgen())
    with engine.begin() as connection:
        connection.execute(
            insert(api_keys).values(
                code_hash=hash_api_code(code), environment=environment.value, name=name, created_at=clock()
            )
        )
    return code


def active_key_id(connection: Connection, environment: Environment, api_code: str) -> int:
    key_id: int | None = connection.scalar(
        select(api_keys.c.id).where(
            api_keys.c.code_hash == hash_api_code(canonical_api_code(api_code)),
            api_keys.c.environment == environment.value,
            api_keys.c.revoked_at.is_(None),
        )
    )
    if key_id is None:
        raise UnknownApiCode(f"no active API code like that in the {environment.value} environment")
    return key_id


def revoke_key(engine: Engine, environment: Environment, api_code: str, *, clock: Clock = utcnow) -> None:
    """Revoke an API code: from now on it is answered 401, and its webhook endpoints are sent nothing more."""
    now = clock()
    with engine.begin() as connection:
        key_id = active_key_id(connection, environment, api_code)
        connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=now))
        # An endpoint registered with a leaked code must not go on hearing of the tenant's orders.
        disable_endpoints(connection, webhook_endpoints.c.api_key_id == key_id, now, "API code revoked")


def disable_endpoints(connection: Connection, which: ColumnElement[bool], at: datetime, reason: str) -> list[int]:
    """Send nothing more to the endpoints picked: disable them (saying why) and fail their pending deliveries."""
    refs = list(
        connection.scalars(
            update(webhook_endpoints)
            .where(which, webhook_endpoints.c.disabled_at.is_(None))
            .values(disabled_at=at, disabled_reason=reason)
            .returning(webhook_endpoints.c.id)
        )
    )
    if refs:
        connection.execute(
            update(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_ref.in_(refs), webhook_deliveries.c.state == PENDING)
            .values(state=FAILED, lease_until=None, finished_at=at)
        )
    return refs


#: The policy word that removes a key's own rate policy, so that it follows the setting again.
DEFAULT_POLICY = "default"


def set_rate_limit(engine: Engine, environment: Environment, api_code: str, policy: str) -> str | None:
    """Give an API key a rate policy of its own (a rate, or "none"), or "default" to follow the setting."""
    policy = policy.strip().lower() if policy.strip().lower() in (UNLIMITED, DEFAULT_POLICY) else policy.strip()
    if policy not in (UNLIMITED, DEFAULT_POLICY):
        try:
            parse_rate(policy)
        except ValueError as error:
            raise InvalidValue(f"{error}, or 'none' (no limit), or 'default' (ORDERCANCEL_RATE_LIMIT)") from None
    stored = None if policy == DEFAULT_POLICY else policy
    with engine.begin() as connection:
        key_id = active_key_id(connection, environment, api_code)
        connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(rate_limit=stored))
    return stored


#: The window word that lifts the cancellation window for one key.
NO_WINDOW_POLICY = "none"


def set_cancellation_window(engine: Engine, environment: Environment, api_code: str, window: str) -> int | None:
    """Give an API key a cancellation window of its own (a duration, or "none"), or "default" to follow the setting.

    Returns what is stored: seconds, domain.NO_WINDOW for "none", None for "default".
    """
    word = window.strip().lower()
    if word == DEFAULT_POLICY:
        stored: int | None = None
    elif word == NO_WINDOW_POLICY:
        stored = domain.NO_WINDOW
    else:
        try:
            seconds = parse_duration(word)
        except ValueError as error:
            raise InvalidValue(
                f"{error}, or 'none' (no window), or 'default' (ORDERCANCEL_CANCELLATION_WINDOW)"
            ) from None
        if seconds != int(seconds) or seconds > domain.MAX_WINDOW.total_seconds():
            raise InvalidValue(f"a key's cancellation window is whole seconds, at most 365d, not {window.strip()!r}")
        stored = int(seconds)
    with engine.begin() as connection:
        key_id = active_key_id(connection, environment, api_code)
        connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(cancellation_window=stored))
    return stored


def list_keys(engine: Engine, environment: Environment) -> list[ApiKey]:
    keys = api_keys.c
    query = (
        select(keys.id, keys.name, keys.created_at, keys.revoked_at, keys.rate_limit, keys.cancellation_window)
        .where(keys.environment == environment.value)
        .order_by(keys.id)
    )
    with engine.connect() as connection:
        return [
            ApiKey(
                row.id,
                row.name,
                as_utc(row.created_at) or utcnow(),
                as_utc(row.revoked_at),
                row.rate_limit,
                row.cancellation_window,
            )
            for row in connection.execute(query)
        ]


def create_order(
    engine: Engine,
    environment: Environment,
    api_code: str,
    *,
    status: str | None = None,
    payment_status: str | None = None,
    engineer: str | None = None,
    number: str | None = None,
    order_id: str | None = None,
    placed_at: str | None = None,
    clock: Clock = utcnow,
    uuidgen: UuidGen = uuid.uuid4,
) -> Order:
    """Create an order for an API code (Ordered, PaymentOK by default); the next free IMCnnnnnn if unnumbered."""
    with _checked():
        fields = new_order(
            order_number=number,
            order_id=order_id,
            status=status,
            payment_status=payment_status,
            engineer=engineer,
            placed_at=placed_at,
        )
    number = fields.order_number
    now = clock()
    values: dict[str, object] = {
        "status": fields.status.value,
        "payment_status": fields.payment_status.value,
        "engineer": fields.engineer,
        "created_at": now,
        # UTC: SQLite keeps the text of a timestamp, and the window compares that text.
        "placed_at": fields.placed_at or now.astimezone(UTC),
    }
    if fields.engineer:
        values["claimed_at"] = values["created_at"]
    canonical_id = fields.order_id or str(uuidgen())
    with engine.begin() as connection:
        values["api_key_id"] = active_key_id(connection, environment, api_code)
    values["order_id"] = canonical_id
    for _ in range(100):
        try:
            with engine.begin() as connection:
                last = connection.scalar(select(func.max(orders.c.id))) or 0
                chosen = number or generated_order_number(last + 1)
                connection.execute(insert(orders).values(order_number=chosen, **values))
        except IntegrityError:
            if number is not None or _order_id_taken(engine, canonical_id):
                raise OrderExists("an order with that number or ID exists already") from None
            continue  # another writer took the generated number first (or it was imported): next
        return find_order(engine, canonical_id)
    raise AdminError("could not find a free order number")  # pragma: no cover


def _order_id_taken(engine: Engine, order_id: str) -> bool:
    with engine.connect() as connection:
        return bool(connection.scalar(select(func.count()).where(orders.c.order_id == order_id)))


def _named(ref: str) -> ColumnElement[bool]:
    """The condition that picks the order a number or an ID names."""
    guid = parse_guid(ref)
    return orders.c.order_id == guid if guid else orders.c.order_number == ref


def find_order(engine: Engine, ref: str) -> Order:
    """Find an order by its number or its ID."""
    ref = ref.strip()
    with engine.connect() as connection:
        row = connection.execute(select(orders).where(_named(ref))).first()
    if row is None:
        raise OrderNotFound(f"no order {ref!r}")
    return order_from_row(row._mapping)


def order_from_row(row: object) -> Order:
    mapping = dict(row)  # type: ignore[call-overload]
    reason = mapping.get("cancellation_reason")
    return Order(
        order_id=mapping["order_id"],
        order_number=mapping["order_number"],
        status=ProductionStatus(mapping["status"]),
        payment_status=PaymentStatus(mapping["payment_status"]),
        engineer=mapping["engineer"],
        claimed_at=as_utc(mapping["claimed_at"]),
        cancelled_at=as_utc(mapping["cancelled_at"]),
        cancellation_reason=None if reason is None else CancellationReason(reason),
        cancellation_note=mapping.get("cancellation_note"),
        cancelled_by=_cancelled_by(mapping.get("cancelled_by_key"), mapping.get("cancelled_by_operator")),
        placed_at=as_utc(mapping.get("placed_at")),
    )


def _cancelled_by(key_id: int | None, operator: str | None) -> CancelledBy | None:
    if key_id is not None:
        return CancelledBy("apiKey", id=key_id)
    if operator is not None:
        return CancelledBy("operator", name=operator)
    return None


def order_fields(order: Order) -> dict[str, object]:
    """The fields `orders show --json` prints and the admin API answers."""
    return {
        "orderId": order.order_id,
        "orderNumber": order.order_number,
        "status": order.status.value,
        "paymentStatus": order.payment_status.value,
        "engineer": order.engineer,
        "claimedAt": order.claimed_at.isoformat() if order.claimed_at else None,
        "cancelledAt": order.cancelled_at.isoformat() if order.cancelled_at else None,
        "cancellationReason": order.cancellation_reason.value if order.cancellation_reason else None,
        "cancellationNote": order.cancellation_note,
        "cancelledBy": order.cancelled_by.fields() if order.cancelled_by else None,
        "placedAt": order.placed_at.isoformat() if order.placed_at else None,
    }


# The lifecycle ---------------------------------------------------------------------------------
#
# Each change is one UPDATE whose WHERE clause is the rule that allows it, so it is decided by
# the row as the database holds it at that instant: two changes that exclude each other (a claim
# and a cancellation) can never both succeed, whichever connections or processes send them. Only
# when the UPDATE changes nothing is the order read, in the same transaction, to say why.

#: Say why a change was refused, or None when the order as read now would allow it.
Explain = Callable[[Order], str | None]
#: What else a change writes, in its transaction, once the order's row has changed.
Record = Callable[[Connection, Row[Any]], None]
#: How often a change is tried again when the order changed between the UPDATE and the read.
RETRIES = 3


def _transition(
    engine: Engine,
    ref: str,
    allowed: ColumnElement[bool] | TextClause,
    values: dict[str, object],
    explain: Explain,
    *,
    record: Record | None = None,
) -> Order:
    ref = ref.strip()
    named = _named(ref)
    reason = None
    for _ in range(RETRIES):
        with engine.begin() as connection:
            row = connection.execute(update(orders).where(named, allowed).values(**values).returning(*orders.c)).first()
            if row is not None:
                if record is not None:
                    record(connection, row)
                return order_from_row(row._mapping)
            current = connection.execute(select(orders).where(named)).first()
        if current is None:
            raise OrderNotFound(f"no order {ref!r}")
        # On PostgreSQL the read sees a newer snapshot than the UPDATE: the order may allow it now.
        reason = explain(order_from_row(current._mapping))
        if reason is not None:
            break
    raise TransitionRefused(reason or f"order {ref} kept changing; try again")


def _listed(statuses: frozenset[ProductionStatus] | frozenset[PaymentStatus]) -> str:
    names = sorted(status.value for status in statuses)
    return " or ".join(names) if names else "nothing: it is an end state"


def next_statuses(status: ProductionStatus) -> frozenset[ProductionStatus]:
    """Return the production statuses an order in status may move to."""
    return frozenset(target for target in ProductionStatus if status in statuses_before(target))


#: The operator an operator's cancellation is recorded under when no name is given.
DEFAULT_OPERATOR = "operator"


def set_status(
    engine: Engine,
    ref: str,
    status: str,
    *,
    operator: str = DEFAULT_OPERATOR,
    request_id: str | None = None,
    reason: str | None = None,
    note: str | None = None,
    clock: Clock = utcnow,
) -> Order:
    """Move an order to another production status, if the lifecycle allows it from where it is.

    Cancelled follows the domain's rule for operators, keeps the reason and note given and the
    operator's name with the order, and is recorded in the cancellation record under that name,
    in the same transaction as the change.
    """
    with _checked():
        target = domain.parse_status(status)
        name = domain.operator_name(operator)
    if target is ProductionStatus.CANCELLED:
        details = _details(reason, note)
        return _cancel_as_operator(engine, ref, name, request_id or uuid.uuid4().hex, clock(), details=details)
    if reason is not None or note is not None:
        raise InvalidValue(f"a reason and a note go with status {ProductionStatus.CANCELLED.value} only")
    allowed = orders.c.status.in_([s.value for s in statuses_before(target)])

    def explain(order: Order) -> str | None:
        if order.status is target:
            return f"order {order.order_number} is {target.value} already"
        if order.status in statuses_before(target):
            return None
        return _cannot_move(order, target)

    return _transition(engine, ref, allowed, {"status": target.value}, explain)


def _cannot_move(order: Order, target: ProductionStatus) -> str:
    return (
        f"order {order.order_number} cannot move from {order.status.value} to {target.value}; "
        f"it may move to {_listed(next_statuses(order.status))}"
    )


def _details(reason: str | None, note: str | None) -> dict[str, object]:
    try:
        chosen, kept = domain.cancellation_details(reason, note)
    except domain.WrongRequestBody:
        raise InvalidValue(
            f"a reason is one of {', '.join(CancellationReason)}; a note is at most "
            f"{domain.MAX_NOTE_LENGTH} printable characters"
        ) from None
    return {"cancellation_reason": None if chosen is None else chosen.value, "cancellation_note": kept}


def _cancel_as_operator(
    engine: Engine, ref: str, operator: str, request_id: str, now: datetime, *, details: dict[str, object]
) -> Order:
    """Cancel an order as an operator may (the domain's rule, as SQL), and record it with the change."""
    allowed = text(cancellable_condition(OPERATOR_CANCELLATION))

    def explain(order: Order) -> str | None:
        refusal = OPERATOR_CANCELLATION.refusal(order)
        if refusal is None:
            return None
        if isinstance(refusal, AlreadyCancelled):
            return f"order {order.order_number} is {ProductionStatus.CANCELLED.value} already"
        if isinstance(refusal, ProcessingStarted):
            return f"order {order.order_number} is claimed by {order.engineer}: release it first"
        return _cannot_move(order, ProductionStatus.CANCELLED)

    def record(connection: Connection, row: Row[Any]) -> None:
        connection.execute(
            insert(cancellation_attempts).values(
                at=now, api_key_id=None, operator=operator, order_ref=row.id, outcome=0, request_id=request_id
            )
        )

    values = {"status": ProductionStatus.CANCELLED.value, "cancelled_at": now, "cancelled_by_operator": operator}
    return _transition(engine, ref, allowed, values | details, explain, record=record)


def set_payment(engine: Engine, ref: str, payment_status: str) -> Order:
    """Record the payment's outcome: only a pending payment may change."""
    with _checked():
        target = domain.parse_payment(payment_status)
    allowed = orders.c.payment_status.in_([s.value for s in payments_before(target)])

    def explain(order: Order) -> str | None:
        if order.payment_status is target:
            return f"payment of order {order.order_number} is {target.value} already"
        if order.payment_status in payments_before(target):
            return None
        return (
            f"payment of order {order.order_number} cannot move from {order.payment_status.value} "
            f"to {target.value}; only {PaymentStatus.PENDING.value} may change"
        )

    return _transition(engine, ref, allowed, {"payment_status": target.value}, explain)


def claim(engine: Engine, ref: str, engineer: str, *, clock: Clock = utcnow) -> Order:
    """Let an engineer start processing an order: from then on it cannot be cancelled."""
    with _checked():
        name = domain.engineer_name(engineer)
    allowed = orders.c.status.in_([s.value for s in OPEN_STATUSES]) & orders.c.engineer.is_(None)

    def explain(order: Order) -> str | None:
        if order.status not in OPEN_STATUSES:
            return f"order {order.order_number} is {order.status.value}: only {_listed(OPEN_STATUSES)} can be claimed"
        if order.engineer is None:
            return None
        return f"order {order.order_number} is claimed by {order.engineer} already"

    return _transition(engine, ref, allowed, {"engineer": name, "claimed_at": clock()}, explain)


def release(engine: Engine, ref: str) -> Order:
    """End an engineer's claim: the order may be claimed or, if still open, cancelled again."""

    def explain(order: Order) -> str | None:
        return None if order.engineer else f"order {order.order_number} is not claimed by anyone"

    return _transition(engine, ref, orders.c.engineer.is_not(None), {"engineer": None, "claimed_at": None}, explain)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded cancellation attempt: outcome 0 is a cancellation, else the refusal's code.

    An integrator's attempt names its API key; an operator's cancellation names the operator.
    """

    id: int
    at: datetime
    key_id: int | None
    key_name: str | None
    order_id: str | None
    order_number: str | None
    outcome: int
    request_id: str
    operator: str | None = None
    #: The answer was an earlier request's, told again for the same Idempotency-Key.
    replayed: bool = False


def list_attempts(
    engine: Engine,
    environment: Environment,
    *,
    api_code: str | None = None,
    order: str | None = None,
    limit: int | None = None,
) -> list[AuditEntry]:
    """Read the cancellation record of one environment, oldest first; the newest `limit` when given.

    An API code selects its attempts even after it was revoked; an order (number or ID) selects
    the attempts that found it, operators' cancellations included.
    """
    attempts = cancellation_attempts
    caller, owner = api_keys.alias("caller"), api_keys.alias("owner")
    query = (
        select(
            attempts.c.id,
            attempts.c.at,
            attempts.c.api_key_id,
            caller.c.name,
            orders.c.order_id,
            orders.c.order_number,
            attempts.c.outcome,
            attempts.c.request_id,
            attempts.c.operator,
            attempts.c.replayed,
        )
        .select_from(attempts)
        .outerjoin(caller, caller.c.id == attempts.c.api_key_id)
        .outerjoin(orders, orders.c.id == attempts.c.order_ref)
        .outerjoin(owner, owner.c.id == orders.c.api_key_id)
        # An operator's row has no key: its environment is that of the order's key.
        .where(func.coalesce(caller.c.environment, owner.c.environment) == environment.value)
        .order_by(attempts.c.id.desc())
    )
    with engine.connect() as connection:
        if api_code is not None:
            key_id = connection.scalar(
                select(api_keys.c.id).where(
                    api_keys.c.code_hash == hash_api_code(canonical_api_code(api_code)),
                    api_keys.c.environment == environment.value,
                )
            )
            if key_id is None:
                raise UnknownApiCode(f"no API code like that in the {environment.value} environment")
            query = query.where(attempts.c.api_key_id == key_id)
        if order is not None:
            ref = connection.scalar(select(orders.c.id).where(_named(order.strip())))
            if ref is None:
                raise OrderNotFound(f"no order {order.strip()!r}")
            query = query.where(attempts.c.order_ref == ref)
        if limit is not None:
            query = query.limit(limit)
        rows = list(connection.execute(query))
    return [
        AuditEntry(
            row.id,
            as_utc(row.at) or utcnow(),
            row.api_key_id,
            row.name,
            row.order_id,
            row.order_number,
            row.outcome,
            row.request_id,
            row.operator,
            bool(row.replayed),
        )
        for row in reversed(rows)
    ]


def audit_fields(entry: AuditEntry) -> dict[str, object]:
    """The fields `audit list --json` prints for one attempt."""
    return {
        "id": entry.id,
        "at": entry.at.isoformat(),
        "keyId": entry.key_id,
        "keyName": entry.key_name,
        "orderId": entry.order_id,
        "orderNumber": entry.order_number,
        "outcome": entry.outcome,
        "requestId": entry.request_id,
        "operator": entry.operator,
        "replayed": entry.replayed,
    }


def prune_idempotency_keys(engine: Engine, *, clock: Clock = utcnow, batch: int = 1000) -> int:
    """Forget every expired Idempotency-Key, a batch per transaction; return how many."""
    removed = 0
    while True:
        expired = select(idempotency_keys.c.id).where(idempotency_keys.c.expires_at <= clock()).limit(batch)
        with engine.begin() as connection:
            count = connection.execute(delete(idempotency_keys).where(idempotency_keys.c.id.in_(expired))).rowcount
        removed += count
        if count < batch:
            return removed
