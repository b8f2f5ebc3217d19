"""Webhooks: endpoints, the outbox of order events, deliveries and their attempts.

Every change of an order's status, payment status or engineer writes its event, and a pending
delivery to each endpoint that may hear of it, through a trigger on orders: in the statement
that makes the change, so in its transaction. No change commits without its event, and no
event exists for a change that rolled back, whichever code path changes the order (the hot
path's conditional UPDATE, the lifecycle use cases, anything later). The trigger's SQL is
written once, below, for both databases; only its wrapper and two expressions differ.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from ordercancel.events import EVENT_BITS, EventType

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TRIGGER = "orders_emit_event"
#: The columns whose change is an event.
WATCHED = "status, payment_status, engineer"
CHANGED = (
    "old.status IS DISTINCT FROM new.status OR old.payment_status IS DISTINCT FROM new.payment_status "
    "OR old.engineer IS DISTINCT FROM new.engineer"
)
# MAX(sequence) + 1 and the fan-out's MAX(id) are safe because the change holds the order's row
# lock until it commits: changes of one order are serialised (PostgreSQL takes a fresh snapshot for
# each statement of the function; SQLite has one writer).
#: Which event a change is: one event per change (a cancellation is announced as order.cancelled).
TYPE = (
    f"CASE WHEN new.status = 'Cancelled' AND old.status <> 'Cancelled' THEN '{EventType.CANCELLED.value}' "
    f"WHEN old.engineer IS NULL AND new.engineer IS NOT NULL THEN '{EventType.CLAIMED.value}' "
    f"WHEN old.engineer IS NOT NULL AND new.engineer IS NULL THEN '{EventType.RELEASED.value}' "
    f"ELSE '{EventType.STATUS_CHANGED.value}' END"
)
#: The event's bit in an endpoint's mask (events.EVENT_BITS: stored values, never renumbered).
BIT = "CASE ev.type " + " ".join(f"WHEN '{kind.value}' THEN {bit}" for kind, bit in EVENT_BITS.items()) + " ELSE 0 END"
#: The statements the trigger runs; {event_id} and {now} are each database's own expressions.
BODY = (
    "INSERT INTO webhook_events (event_id, type, order_ref, api_key_id, sequence, occurred_at, status, "
    "payment_status, from_status, from_payment, engineer, cancelled_at, cancellation_reason, cancellation_note, "
    "cancelled_by_key, cancelled_by_operator) "
    f"SELECT {{event_id}}, {TYPE}, new.id, new.api_key_id, COALESCE(MAX(sequence), 0) + 1, {{now}}, new.status, "
    "new.payment_status, old.status, old.payment_status, COALESCE(new.engineer, old.engineer), new.cancelled_at, "
    "new.cancellation_reason, new.cancellation_note, new.cancelled_by_key, new.cancelled_by_operator "
    "FROM webhook_events WHERE order_ref = new.id; "
    "INSERT INTO webhook_deliveries (event_ref, endpoint_ref, state, attempts, due_at, created_at) "
    "SELECT ev.id, ep.id, 'pending', 0, ev.occurred_at, ev.occurred_at FROM webhook_events ev "
    "JOIN webhook_endpoints ep ON ep.disabled_at IS NULL "
    "AND (ep.api_key_id IS NULL OR ep.api_key_id = ev.api_key_id) "
    f"AND (ep.event_mask & {BIT}) <> 0 "
    "WHERE ev.id = (SELECT MAX(id) FROM webhook_events WHERE order_ref = new.id);"
)
SQLITE = {
    "event_id": "'evt_' || lower(hex(randomblob(16)))",
    # The text form SQLAlchemy stores (naive UTC, microseconds): compared as text with bound times.
    "now": "strftime('%Y-%m-%d %H:%M:%f000', 'now')",
}
POSTGRES = {"event_id": "'evt_' || replace(gen_random_uuid()::text, '-', '')", "now": "clock_timestamp()"}


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("endpoint_id", sa.String(32), nullable=False, unique=True),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), index=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("event_mask", sa.Integer, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128)),
        sa.Column("previous_secret_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True)),
        sa.Column("disabled_reason", sa.Text),
        sa.Column("removed_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("order_ref", sa.Integer, sa.ForeignKey("orders.id"), nullable=False),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payment_status", sa.String(16), nullable=False),
        sa.Column("from_status", sa.String(16), nullable=False),
        sa.Column("from_payment", sa.String(16), nullable=False),
        sa.Column("engineer", sa.Text),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.Column("cancellation_reason", sa.String(32)),
        sa.Column("cancellation_note", sa.Text),
        sa.Column("cancelled_by_key", sa.Integer),
        sa.Column("cancelled_by_operator", sa.Text),
        sa.UniqueConstraint("order_ref", "sequence", name="uq_webhook_events_order_ref_sequence"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("event_ref", sa.Integer, sa.ForeignKey("webhook_events.id"), nullable=False, index=True),
        sa.Column("endpoint_ref", sa.Integer, sa.ForeignKey("webhook_endpoints.id"), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Index("ix_webhook_deliveries_state_due_at", "state", "due_at"),
    )
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("delivery_ref", sa.Integer, sa.ForeignKey("webhook_deliveries.id"), nullable=False, index=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
    )
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF {WATCHED} ON orders FOR EACH ROW WHEN {CHANGED} "
            f"BEGIN {BODY.format(**SQLITE)} END"
        )
    else:
        op.execute(
            f"CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"{BODY.format(**POSTGRES)} RETURN NULL; END $$"
        )
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF {WATCHED} ON orders FOR EACH ROW WHEN ({CHANGED}) "
            f"EXECUTE FUNCTION {TRIGGER}()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    else:
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER} ON orders")
        op.execute(f"DROP FUNCTION IF EXISTS {TRIGGER}()")
    for table in ("webhook_attempts", "webhook_deliveries", "webhook_events", "webhook_endpoints"):
        op.drop_table(table)
