"""Use cases behind the admin CLI and admin HTTP API: API codes and orders.

These are not on the hot path, so they go through SQLAlchemy Core and run unchanged on
every dialect. Every change is one conditional statement, so they race correctly with
cancellations running on other connections.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from ordercancel.config import Environment
from ordercancel.database import as_utc, utcnow
from ordercancel.domain import (
    Order,
    PaymentStatus,
    ProductionStatus,
    generated_order_number,
    is_order_number,
    parse_guid,
)
from ordercancel.schema import api_keys, cancellation_attempts, orders

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


def hash_api_code(api_code: str) -> str:
    """Return the SHA-256 of an API code's canonical form: the only form we store."""
    return hashlib.sha256(api_code.encode()).hexdigest()


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


def _key_id(connection: Connection, environment: Environment, api_code: str) -> int:
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
    """Revoke an API code: from now on it is answered 401."""
    with engine.begin() as connection:
        key_id = _key_id(connection, environment, api_code)
        connection.execute(update(api_keys).where(api_keys.c.id == key_id).values(revoked_at=clock()))


def list_keys(engine: Engine, environment: Environment) -> list[ApiKey]:
    query = (
        select(api_keys.c.id, api_keys.c.name, api_keys.c.created_at, api_keys.c.revoked_at)
        .where(api_keys.c.environment == environment.value)
        .order_by(api_keys.c.id)
    )
    with engine.connect() as connection:
        return [
            ApiKey(row.id, row.name, as_utc(row.created_at) or utcnow(), as_utc(row.revoked_at))
            for row in connection.execute(query)
        ]


def _parse(kind: type[ProductionStatus] | type[PaymentStatus], text: str) -> str:
    try:
        return kind(text).value
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidValue(f"unknown status {text!r}; one of: {allowed}") from None


def create_order(
    engine: Engine,
    environment: Environment,
    api_code: str,
    *,
    status: str = ProductionStatus.ORDERED.value,
    payment_status: str = PaymentStatus.OK.value,
    engineer: str | None = None,
    number: str | None = None,
    order_id: str | None = None,
    clock: Clock = utcnow,
    uuidgen: UuidGen = uuid.uuid4,
) -> Order:
    """Create an order for an API code; without a number, the next free IMCnnnnnn is given."""
    values: dict[str, object] = {
        "status": _parse(ProductionStatus, status),
        "payment_status": _parse(PaymentStatus, payment_status),
        "engineer": engineer or None,
        "created_at": clock(),
    }
    if engineer and values["status"] not in (ProductionStatus.ORDERED, ProductionStatus.PROCESSING):
        raise InvalidValue("an engineer can only hold an order that is Ordered or Processing")
    if engineer:
        values["claimed_at"] = values["created_at"]
    if number is not None and not is_order_number(number):
        raise InvalidValue(f"order number {number!r} is not 1-32 letters, digits and dashes")
    canonical_id = str(uuidgen()) if order_id is None else parse_guid(order_id.strip())
    if canonical_id is None:
        raise InvalidValue(f"order ID {order_id!r} is not a GUID")
    with engine.begin() as connection:
        values["api_key_id"] = _key_id(connection, environment, api_code)
    values["order_id"] = canonical_id
    for _ in range(100):
        try:
            with engine.begin() as connection:
                last = connection.scalar(select(func.max(orders.c.id))) or 0
                chosen = number or generated_order_number(last + 1)
                connection.execute(insert(orders).values(order_number=chosen, **values))
        except IntegrityError:
            if number is not None or _order_id_taken(engine, canonical_id):
                raise InvalidValue("an order with that number or ID exists already") from None
            continue  # another writer took the generated number first (or it was imported): next
        return find_order(engine, canonical_id)
    raise AdminError("could not find a free order number")  # pragma: no cover


def _order_id_taken(engine: Engine, order_id: str) -> bool:
    with engine.connect() as connection:
        return bool(connection.scalar(select(func.count()).where(orders.c.order_id == order_id)))


def find_order(engine: Engine, ref: str) -> Order:
    """Find an order by its number or its ID."""
    ref = ref.strip()
    with engine.connect() as connection:
        row = connection.execute(select(orders).where(_order_condition(ref))).first()
    if row is None:
        raise OrderNotFound(f"no order {ref!r}")
    return order_from_row(row._mapping)


def _order_condition(ref: str) -> ColumnElement[bool]:
    ref = ref.strip()
    guid = parse_guid(ref)
    return orders.c.order_id == guid if guid else orders.c.order_number == ref


def order_from_row(row: object) -> Order:
    mapping = dict(row)  # type: ignore[call-overload]
    return Order(
        order_id=mapping["order_id"],
        order_number=mapping["order_number"],
        status=ProductionStatus(mapping["status"]),
        payment_status=PaymentStatus(mapping["payment_status"]),
        engineer=mapping["engineer"],
        claimed_at=as_utc(mapping["claimed_at"]),
        cancelled_at=as_utc(mapping["cancelled_at"]),
    )


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
    }


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded cancellation attempt: outcome 0 is a cancellation, else the refusal's code."""

    id: int
    at: datetime
    key_id: int
    key_name: str
    order_id: str | None
    order_number: str | None
    outcome: int
    request_id: str


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
    the attempts that found it.
    """
    attempts = cancellation_attempts
    query = (
        select(
            attempts.c.id,
            attempts.c.at,
            attempts.c.api_key_id,
            api_keys.c.name,
            orders.c.order_id,
            orders.c.order_number,
            attempts.c.outcome,
            attempts.c.request_id,
        )
        .join(api_keys, api_keys.c.id == attempts.c.api_key_id)
        .outerjoin(orders, orders.c.id == attempts.c.order_ref)
        .where(api_keys.c.environment == environment.value)
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
            ref = connection.scalar(select(orders.c.id).where(_order_condition(order)))
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
    }
