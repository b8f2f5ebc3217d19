"""Webhooks in the database: endpoints, the outbox's deliveries, and the dispatchers' claims.

The events themselves and their pending deliveries are written by the trigger of migration
0008, in the transaction of the change. This module is everything else: the endpoints'
use cases (integrators' and operators'), and the two statements a dispatcher lives by: claim
due deliveries under a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL, so any number of
dispatchers over one database never send one delivery at once; SQLite's single writer gives
the same), and settle them, recording every attempt. SQLAlchemy Core, on every dialect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, insert, or_, select, update

from ordercancel.config import Environment
from ordercancel.domain import CancelledBy, PaymentStatus, ProductionStatus
from ordercancel.events import (
    Event,
    EventType,
    InvalidSubscription,
    event_mask,
    event_types,
    new_endpoint_id,
    new_secret,
)
from ordercancel.storage.database import as_utc, utcnow
from ordercancel.storage.schema import (
    DELIVERED,
    FAILED,
    PENDING,
    api_keys,
    orders,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
    webhook_events,
)
from ordercancel.storage.service import InvalidValue, OrderNotFound, active_key_id, disable_endpoints

Clock = Callable[[], datetime]

#: How long both secrets sign after a rotation.
ROTATION_OVERLAP = timedelta(hours=24)
#: Most endpoints one API key may have: each one multiplies every event's deliveries.
MAX_ENDPOINTS_PER_KEY = 20


class EndpointNotFound(OrderNotFound):
    """No such endpoint, or not one of the caller's (the two are not told apart)."""


class EventNotFound(OrderNotFound):
    """No such event, or not one the endpoint may hear of."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    endpoint_id: str
    url: str
    events: list[str]
    #: The API key it belongs to (None: an operator's, for every order).
    api_key_id: int | None
    created_at: datetime
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    #: Until when the secret replaced by the last rotation still signs.
    previous_secret_until: datetime | None = None

    def fields(self) -> dict[str, object]:
        return {
            "id": self.endpoint_id,
            "url": self.url,
            "events": self.events,
            "apiKeyId": self.api_key_id,
            "createdAt": self.created_at.isoformat(),
            "disabledAt": None if self.disabled_at is None else self.disabled_at.isoformat(),
            "disabledReason": self.disabled_reason,
        }


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(
        row.endpoint_id,
        row.url,
        event_types(row.event_mask),
        row.api_key_id,
        as_utc(row.created_at) or utcnow(),
        as_utc(row.disabled_at),
        row.disabled_reason,
        as_utc(row.previous_secret_until),
    )


def _checked_mask(types: Sequence[str] | None) -> int:
    try:
        return event_mask(types)
    except InvalidSubscription as error:
        raise InvalidValue(str(error)) from None


def add_endpoint(
    engine: Engine, url: str, *, api_key_id: int | None, types: Sequence[str] | None = None, clock: Clock = utcnow
) -> tuple[Endpoint, str]:
    """Register an endpoint (its URL already checked by the caller); return it and its secret, shown this once."""
    mask = _checked_mask(types)
    secret = new_secret()
    values = {
        "endpoint_id": new_endpoint_id(),
        "api_key_id": api_key_id,
        "url": url,
        "event_mask": mask,
        "secret": secret,
        "created_at": clock(),
    }
    with engine.begin() as connection:
        if api_key_id is not None:
            owned = connection.scalar(
                select(func.count()).select_from(webhook_endpoints).where(webhook_endpoints.c.api_key_id == api_key_id)
            )
            if (owned or 0) >= MAX_ENDPOINTS_PER_KEY:
                raise InvalidValue(f"an API code has at most {MAX_ENDPOINTS_PER_KEY} webhook endpoints")
        connection.execute(insert(webhook_endpoints).values(**values))
        row = connection.execute(
            select(webhook_endpoints).where(webhook_endpoints.c.endpoint_id == values["endpoint_id"])
        ).one()
    return _endpoint(row), secret


def add_endpoint_for_code(
    engine: Engine, environment: Environment, url: str, *, api_code: str | None, types: Sequence[str] | None = None
) -> tuple[Endpoint, str]:
    """Register an endpoint as an operator does: for the API code given (its orders), or for every order (None)."""
    key_id = None
    if api_code is not None:
        with engine.connect() as connection:
            key_id = active_key_id(connection, environment, api_code)
    return add_endpoint(engine, url, api_key_id=key_id, types=types)


def _scoped(endpoint_id: str, api_key_id: int | None, operator: bool) -> Any:
    """The condition that finds an endpoint its asker may see: an operator any, an integrator its own."""
    named = and_(webhook_endpoints.c.endpoint_id == endpoint_id.strip(), webhook_endpoints.c.removed_at.is_(None))
    return named if operator else and_(named, webhook_endpoints.c.api_key_id == api_key_id)


def list_endpoints(engine: Engine, *, api_key_id: int | None = None, operator: bool = False) -> list[Endpoint]:
    """The endpoints an operator sees (all), or an integrator's own."""
    query = select(webhook_endpoints).where(webhook_endpoints.c.removed_at.is_(None)).order_by(webhook_endpoints.c.id)
    if not operator:
        query = query.where(webhook_endpoints.c.api_key_id == api_key_id)
    with engine.connect() as connection:
        return [_endpoint(row) for row in connection.execute(query)]


def remove_endpoint(
    engine: Engine, endpoint_id: str, *, api_key_id: int | None = None, operator: bool = False, clock: Clock = utcnow
) -> None:
    """Remove an endpoint: nothing more is sent to it, and it is listed nowhere any more.

    The row stays, disabled: deleting it would fail any change committing a delivery to it at
    that moment (the trigger saw it a moment before), and a removal racing such a change.
    """
    now = clock()
    with engine.begin() as connection:
        ref = connection.scalar(
            update(webhook_endpoints)
            .where(_scoped(endpoint_id, api_key_id, operator))
            .values(removed_at=now)
            .returning(webhook_endpoints.c.id)
        )
        if ref is None:
            raise EndpointNotFound(f"no webhook endpoint {endpoint_id.strip()[:64]!r}")
        disable_endpoints(connection, webhook_endpoints.c.id == ref, now, "removed")


def rotate_secret(engine: Engine, endpoint_id: str, *, clock: Clock = utcnow) -> tuple[Endpoint, str]:
    """Give an endpoint a new secret; the old one signs too for 24 hours (two signatures a delivery)."""
    secret = new_secret()
    until = clock() + ROTATION_OVERLAP
    with engine.begin() as connection:
        row = connection.execute(
            update(webhook_endpoints)
            .where(_scoped(endpoint_id, None, True))
            .values(previous_secret=webhook_endpoints.c.secret, previous_secret_until=until, secret=secret)
            .returning(*webhook_endpoints.c)
        ).first()
    if row is None:
        raise EndpointNotFound(f"no webhook endpoint {endpoint_id.strip()[:64]!r}")
    return _endpoint(row), secret


# Deliveries, as operators see them -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    at: datetime
    status: int | None
    latency_ms: int
    error: str | None

    def fields(self) -> dict[str, object]:
        return {"at": self.at.isoformat(), "status": self.status, "latencyMs": self.latency_ms, "error": self.error}


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: int
    event_id: str
    event_type: str
    order_number: str
    endpoint_id: str
    state: str
    due_at: datetime
    attempts: list[AttemptRecord]

    def fields(self) -> dict[str, object]:
        return {
            "id": self.id,
            "eventId": self.event_id,
            "type": self.event_type,
            "orderNumber": self.order_number,
            "endpointId": self.endpoint_id,
            "state": self.state,
            "nextAttemptAt": self.due_at.isoformat() if self.state == PENDING else None,
            "attempts": [attempt.fields() for attempt in self.attempts],
        }


def list_deliveries(engine: Engine, *, endpoint_id: str | None = None, limit: int = 100) -> list[DeliveryRecord]:
    """The newest deliveries (of one endpoint, or all), oldest first, each with its attempts."""
    d, ev, ep = webhook_deliveries, webhook_events, webhook_endpoints
    query = (
        select(d.c.id, ev.c.event_id, ev.c.type, orders.c.order_number, ep.c.endpoint_id, d.c.state, d.c.due_at)
        .join(ev, ev.c.id == d.c.event_ref)
        .join(ep, ep.c.id == d.c.endpoint_ref)
        .join(orders, orders.c.id == ev.c.order_ref)
        .where(ep.c.removed_at.is_(None))
        .order_by(d.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as connection:
        if endpoint_id is not None:
            if connection.scalar(select(ep.c.id).where(_scoped(endpoint_id, None, True))) is None:
                raise EndpointNotFound(f"no webhook endpoint {endpoint_id.strip()[:64]!r}")
            query = query.where(ep.c.endpoint_id == endpoint_id.strip())
        rows = list(connection.execute(query))
        tried: dict[int, list[AttemptRecord]] = {row.id: [] for row in rows}
        a = webhook_attempts
        for attempt in connection.execute(
            select(a.c.delivery_ref, a.c.at, a.c.status, a.c.latency_ms, a.c.error)
            .where(a.c.delivery_ref.in_(list(tried)))
            .order_by(a.c.id)
        ):
            tried[attempt.delivery_ref].append(
                AttemptRecord(as_utc(attempt.at) or utcnow(), attempt.status, attempt.latency_ms, attempt.error)
            )
    return [
        DeliveryRecord(
            row.id,
            row.event_id,
            row.type,
            row.order_number,
            row.endpoint_id,
            row.state,
            as_utc(row.due_at) or utcnow(),
            tried[row.id],
        )
        for row in reversed(rows)
    ]


def _may_hear(endpoint_key: int | None, event_key: int) -> bool:
    return endpoint_key is None or endpoint_key == event_key


def replay(engine: Engine, event_id: str, *, endpoint_id: str | None = None, clock: Clock = utcnow) -> int:
    """Send an event again: to one endpoint that may hear of it, or to every endpoint it went to.

    Each is a new delivery, due now, with the event's own webhook-id (receivers that drop
    duplicates by id drop it too). Returns how many deliveries were made.
    """
    now = clock()
    ev, ep, d = webhook_events, webhook_endpoints, webhook_deliveries
    with engine.begin() as connection:
        event = connection.execute(select(ev.c.id, ev.c.api_key_id).where(ev.c.event_id == event_id.strip())).first()
        if event is None:
            raise EventNotFound(f"no event {event_id.strip()[:64]!r}")
        if endpoint_id is not None:
            target = connection.execute(
                select(ep.c.id, ep.c.api_key_id, ep.c.disabled_at).where(_scoped(endpoint_id, None, True))
            ).first()
            if target is None:
                raise EndpointNotFound(f"no webhook endpoint {endpoint_id.strip()[:64]!r}")
            if not _may_hear(target.api_key_id, event.api_key_id):
                raise EventNotFound(f"endpoint {endpoint_id.strip()} may not hear of event {event_id.strip()}")
            if target.disabled_at is not None:
                raise InvalidValue(f"endpoint {endpoint_id.strip()} is disabled (it answered 410 Gone)")
            refs = [target.id]
        else:
            refs = list(
                connection.scalars(
                    select(d.c.endpoint_ref)
                    .distinct()
                    .join(ep, ep.c.id == d.c.endpoint_ref)
                    .where(d.c.event_ref == event.id, ep.c.disabled_at.is_(None))
                )
            )
        for ref in refs:
            connection.execute(
                insert(d).values(
                    event_ref=event.id, endpoint_ref=ref, state=PENDING, attempts=0, due_at=now, created_at=now
                )
            )
    return len(refs)


# The dispatcher's side -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Due:
    """A delivery a dispatcher has claimed: where to send what, signed with which secrets."""

    delivery_id: int
    attempts: int
    url: str
    secrets: tuple[str, ...]
    #: An operator's endpoint: it sees people's names in the payload.
    operator: bool
    endpoint_ref: int
    event: Event
    #: The claim's lease: the attempt's result is recorded against it, and only while it holds.
    lease_until: datetime


@dataclass(frozen=True, slots=True)
class Result:
    """What one attempt came to: the answer's status (None: no answer), how long, what failed."""

    delivery_id: int
    at: datetime
    status: int | None
    latency_ms: int
    error: str | None
    #: The next attempt's time; None: no more attempts (delivered, or failed for good).
    retry_at: datetime | None
    delivered: bool
    #: The claim's lease (Due.lease_until): another dispatcher's newer claim is not overwritten.
    lease_until: datetime
    #: The endpoint answered 410 Gone: disable it.
    gone_endpoint: int | None = None


def _event(row: Any) -> Event:
    by = None
    if row.cancelled_by_key is not None:
        by = CancelledBy("apiKey", id=row.cancelled_by_key)
    elif row.cancelled_by_operator is not None:
        by = CancelledBy("operator", name=row.cancelled_by_operator)
    return Event(
        event_id=row.event_id,
        type=EventType(row.type),
        occurred_at=as_utc(row.occurred_at) or utcnow(),
        environment=row.environment,
        order_id=row.order_id,
        order_number=row.order_number,
        sequence=row.sequence,
        status=ProductionStatus(row.status),
        payment_status=PaymentStatus(row.payment_status),
        from_status=ProductionStatus(row.from_status),
        from_payment=PaymentStatus(row.from_payment),
        engineer=row.engineer,
        cancelled_at=as_utc(row.cancelled_at),
        cancellation_reason=row.cancellation_reason,
        cancellation_note=row.cancellation_note,
        cancelled_by=by,
    )


def _is_due(now: datetime) -> Any:
    d = webhook_deliveries.c
    return and_(d.state == PENDING, d.due_at <= now, or_(d.lease_until.is_(None), d.lease_until <= now))


def _claim(connection: Connection, now: datetime, lease_until: datetime, limit: int) -> list[Due]:
    d, ev, ep = webhook_deliveries, webhook_events, webhook_endpoints
    # A change that committed while its endpoint was being disabled (removed, revoked, 410) may
    # have given it a delivery after the others were failed: fail it too, never send it.
    disabled = select(ep.c.id).where(ep.c.disabled_at.is_not(None)).scalar_subquery()
    connection.execute(
        update(d).where(d.c.state == PENDING, d.c.endpoint_ref.in_(disabled)).values(state=FAILED, finished_at=now)
    )
    due = select(d.c.id).where(_is_due(now)).order_by(d.c.due_at).limit(limit)
    if connection.dialect.name == "postgresql":
        # The rows are picked (and locked) once, in a materialized CTE: PostgreSQL may run an
        # `id IN (SELECT … LIMIT n FOR UPDATE SKIP LOCKED)` so that far more than n rows match.
        picked = due.with_for_update(skip_locked=True).cte("due").prefix_with("MATERIALIZED")
        chosen = d.c.id == picked.c.id
    else:
        chosen = d.c.id.in_(due.scalar_subquery())
    claimed = list(
        connection.scalars(update(d).where(chosen, _is_due(now)).values(lease_until=lease_until).returning(d.c.id))
    )
    if not claimed:
        return []
    rows = connection.execute(
        select(
            d.c.id.label("delivery_id"),
            d.c.attempts,
            ep.c.id.label("endpoint_ref"),
            ep.c.url,
            ep.c.secret,
            ep.c.previous_secret,
            ep.c.previous_secret_until,
            ep.c.api_key_id.label("endpoint_key"),
            ev.c.event_id,
            ev.c.type,
            ev.c.occurred_at,
            ev.c.sequence,
            ev.c.status,
            ev.c.payment_status,
            ev.c.from_status,
            ev.c.from_payment,
            ev.c.engineer,
            ev.c.cancelled_at,
            ev.c.cancellation_reason,
            ev.c.cancellation_note,
            ev.c.cancelled_by_key,
            ev.c.cancelled_by_operator,
            ev.c.api_key_id.label("event_key"),
            orders.c.order_id,
            orders.c.order_number,
            api_keys.c.environment,
        )
        .join(ev, ev.c.id == d.c.event_ref)
        .join(ep, ep.c.id == d.c.endpoint_ref)
        .join(orders, orders.c.id == ev.c.order_ref)
        .join(api_keys, api_keys.c.id == ev.c.api_key_id)
        .where(d.c.id.in_(claimed))
        .order_by(d.c.due_at, d.c.id)
    )
    work = []
    for row in rows:
        secrets = [row.secret]
        until = as_utc(row.previous_secret_until)
        if row.previous_secret is not None and until is not None and until > now:
            secrets.append(row.previous_secret)
        # Belt and braces: the trigger only ever fans out to endpoints that may hear of the order.
        if not _may_hear(row.endpoint_key, row.event_key):  # pragma: no cover
            continue
        work.append(
            Due(
                row.delivery_id,
                row.attempts,
                row.url,
                tuple(secrets),
                row.endpoint_key is None,
                row.endpoint_ref,
                _event(row),
                lease_until,
            )
        )
    return work


_SETTLE = (
    update(webhook_deliveries)
    .where(
        webhook_deliveries.c.id == bindparam("delivery"),
        webhook_deliveries.c.state == PENDING,
        # Past its lease another dispatcher may hold it: that one's claim is not ours to settle.
        webhook_deliveries.c.lease_until == bindparam("lease"),
    )
    .values(
        state=bindparam("state"),
        attempts=webhook_deliveries.c.attempts + 1,
        due_at=bindparam("due"),
        lease_until=None,
        finished_at=bindparam("finished"),
    )
)


def _settle(connection: Connection, results: Sequence[Result]) -> None:
    if not results:
        return
    connection.execute(
        insert(webhook_attempts),
        [
            {
                "delivery_ref": r.delivery_id,
                "at": r.at,
                "status": r.status,
                "latency_ms": r.latency_ms,
                "error": r.error,
            }
            for r in results
        ],
    )
    connection.execute(
        _SETTLE,
        [
            {
                "delivery": r.delivery_id,
                "lease": r.lease_until,
                "state": DELIVERED if r.delivered else PENDING if r.retry_at is not None else FAILED,
                "due": r.retry_at or r.at,
                "finished": None if r.retry_at is not None else r.at,
            }
            for r in results
        ],
    )
    for endpoint_ref in {r.gone_endpoint for r in results if r.gone_endpoint is not None}:
        at = max(r.at for r in results if r.gone_endpoint == endpoint_ref)
        # Nothing more goes to it: its other pending deliveries fail now rather than wait.
        disable_endpoints(connection, webhook_endpoints.c.id == endpoint_ref, at, "answered 410 Gone")


def settle_and_claim(
    engine: Engine, results: Sequence[Result], *, now: datetime, lease: timedelta, limit: int
) -> list[Due]:
    """Record the attempts that finished and claim up to `limit` due deliveries, in one transaction."""
    with engine.begin() as connection:
        _settle(connection, results)
        return _claim(connection, now, now + lease, limit) if limit > 0 else []


def has_due(engine: Engine, now: datetime) -> bool:
    """Tell, with a read alone, whether a delivery is due (an idle dispatcher writes nothing)."""
    with engine.connect() as connection:
        return connection.scalar(select(webhook_deliveries.c.id).where(_is_due(now)).limit(1)) is not None


def backlog(engine: Engine, *, clock: Clock = utcnow) -> tuple[int, float]:
    """Pending deliveries, and how long the oldest of them has waited, in seconds (0: none).

    A delivery waits from its event (a replay's, from the replay): an old event sent again is not old news.
    """
    d = webhook_deliveries
    with engine.connect() as connection:
        row = connection.execute(select(func.count(), func.min(d.c.created_at)).where(d.c.state == PENDING)).one()
    oldest = as_utc(row[1])
    return int(row[0]), 0.0 if oldest is None else max(0.0, (clock() - oldest).total_seconds())
