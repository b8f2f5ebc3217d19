"""SQLite: a successful cancellation's audit row is written by the UPDATE itself, through a trigger.

The cancellation's UPDATE sets `orders.cancel_request_id`; on SQLite a trigger on that column
inserts the success's row into cancellation_attempts, in the same statement and so the same
transaction: one statement a success instead of two (measured in docs/performance.md). The
column exists on PostgreSQL too, so that both databases keep one schema; there the success and
its row are one statement already (a CTE), and nothing sets the column.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TRIGGER = "orders_record_cancellation"


def upgrade() -> None:
    # A plain ADD COLUMN, not a batch copy of the table: a copy would drop the table's triggers.
    op.add_column("orders", sa.Column("cancel_request_id", sa.String(128)))
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"CREATE TRIGGER {TRIGGER} AFTER UPDATE OF cancel_request_id ON orders "
            "WHEN new.cancel_request_id IS NOT NULL BEGIN "
            "INSERT INTO cancellation_attempts (at, api_key_id, order_ref, outcome, request_id, replayed) "
            "VALUES (new.cancelled_at, new.cancelled_by_key, new.id, 0, new.cancel_request_id, 0); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    with op.batch_alter_table("orders") as table:
        table.drop_column("cancel_request_id")
