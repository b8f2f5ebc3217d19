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
