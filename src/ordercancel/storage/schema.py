"""The database schema, shared by every dialect; Alembic migrations are written against it."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from ordercancel.domain import PaymentStatus, ProductionStatus

metadata = MetaData()


def _one_of(column: str, values: type[ProductionStatus] | type[PaymentStatus]) -> CheckConstraint:
    listed = ", ".join(f"'{v.value}'" for v in values)
    return CheckConstraint(f"{column} IN ({listed})", name=f"ck_orders_{column}")


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # SHA-256 of the canonical (lower-case) API code: the code itself is never stored.
    Column("code_hash", String(64), nullable=False, unique=True),
    Column("environment", String(16), nullable=False),
    Column("name", Text, nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    # The key's own rate policy: NULL follows ORDERCANCEL_RATE_LIMIT, "none" lifts the limit.
    Column("rate_limit", String(64)),
    # The key's own cancellation window in seconds: NULL follows ORDERCANCEL_CANCELLATION_WINDOW,
    # 0 means no window for this key (never negative: the service checks it).
    Column("cancellation_window", Integer),
)

orders = Table(
    "orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("order_id", String(36), nullable=False, unique=True),
    Column("order_number", String(32), nullable=False, unique=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("payment_status", String(16), nullable=False),
    Column("engineer", Text),
    Column("claimed_at", DateTime(timezone=True)),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # When the order was placed (default: when it was made or imported): the window runs from here.
    Column("placed_at", DateTime(timezone=True), nullable=False),
    # Why and by whom it was cancelled: an API key (its row id) or an operator (a name), never both.
    Column("cancellation_reason", String(32)),
    Column("cancellation_note", Text),
    Column("cancelled_by_key", Integer, ForeignKey("api_keys.id")),
    Column("cancelled_by_operator", Text),
    #: The request that cancelled the order through the API: on SQLite, setting it makes a trigger
    #: write the success's audit row (migration 0007). Nothing reads it back.
    Column("cancel_request_id", String(128)),
    _one_of("status", ProductionStatus),
    _one_of("payment_status", PaymentStatus),
)

# Append-only: one row per authenticated cancellation attempt, whatever its outcome, and one per
# operator's cancellation. Each row is either an API key's or an operator's, never both or neither.
cancellation_attempts = Table(
    "cancellation_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("api_key_id", Integer, ForeignKey("api_keys.id")),
    Column("order_ref", Integer, ForeignKey("orders.id")),
    Column("outcome", Integer, nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("operator", Text),
    # The answer was an earlier request's, told again for the same Idempotency-Key.
    Column("replayed", Boolean, nullable=False, server_default=false()),
    Index("ix_cancellation_attempts_order_ref", "order_ref"),
    Index("ix_cancellation_attempts_api_key_id", "api_key_id"),
    CheckConstraint("(api_key_id IS NULL) <> (operator IS NULL)", name="ck_cancellation_attempts_key_or_operator"),
)

# The first completed answer to each Idempotency-Key of each API key, kept until it expires.
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("key", String(255), nullable=False),
    # SHA-256 of what the request asked (endpoint, order, reason, note): a reuse must ask the same.
    Column("fingerprint", String(64), nullable=False),
    # The answer's code (0: cancelled), and the order it named; NULL while being processed.
    Column("outcome", Integer),
    Column("order_id", String(36)),
    Column("order_number", String(32)),
    Column("order_ref", Integer, ForeignKey("orders.id")),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("api_key_id", "key", name="uq_idempotency_keys_api_key_id_key"),
    Index("ix_idempotency_keys_expires_at", "expires_at"),
)

# Webhooks (events.py): endpoints, the outbox of events, and their deliveries with every attempt.
# The events and their deliveries are written by a trigger on orders (migration 0008), in the
# transaction of the change they describe, whichever code path makes it.

# Where events are sent: an integrator's endpoint belongs to one API key and hears of that key's
# orders only; an operator's (api_key_id NULL) hears of every order.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("endpoint_id", String(32), nullable=False, unique=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), index=True),
    Column("url", Text, nullable=False),
    # The event types it wants, as events.EVENT_BITS (the trigger tests the bits).
    Column("event_mask", Integer, nullable=False),
    Column("secret", String(128), nullable=False),
    # After a rotation the old secret signs too, until previous_secret_until.
    Column("previous_secret", String(128)),
    Column("previous_secret_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Set when nothing more is sent to it: it answered 410 Gone, its API code was revoked, or it was removed.
    Column("disabled_at", DateTime(timezone=True)),
    Column("disabled_reason", Text),
    # Removed (kept, disabled, so that a change racing the removal never meets a missing row).
    Column("removed_at", DateTime(timezone=True)),
)

# The outbox: one row per change of an order, the order as it is after the change and what moved.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("type", String(32), nullable=False),
    Column("order_ref", Integer, ForeignKey("orders.id"), nullable=False),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("payment_status", String(16), nullable=False),
    Column("from_status", String(16), nullable=False),
    Column("from_payment", String(16), nullable=False),
    Column("engineer", Text),
    Column("cancelled_at", DateTime(timezone=True)),
    Column("cancellation_reason", String(32)),
    Column("cancellation_note", Text),
    Column("cancelled_by_key", Integer),
    Column("cancelled_by_operator", Text),
    UniqueConstraint("order_ref", "sequence", name="uq_webhook_events_order_ref_sequence"),
)

#: The states of a delivery (webhook_deliveries.state).
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"

# One event to one endpoint: pending until a 2xx answer (delivered) or the schedule runs out (failed).
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_ref", Integer, ForeignKey("webhook_events.id"), nullable=False, index=True),
    Column("endpoint_ref", Integer, ForeignKey("webhook_endpoints.id"), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    # Attempts made so far, and when the next one is due.
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("due_at", DateTime(timezone=True), nullable=False),
    # A dispatcher holds the delivery until then; past it, another may take it (the holder died).
    Column("lease_until", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Index("ix_webhook_deliveries_state_due_at", "state", "due_at"),
)

# Every attempt of every delivery: when, the answer's status (NULL: none came), how long, what failed.
webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("delivery_ref", Integer, ForeignKey("webhook_deliveries.id"), nullable=False, index=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("status", Integer),
    Column("latency_ms", Integer, nullable=False),
    Column("error", Text),
)
