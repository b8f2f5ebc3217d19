"""Idempotency keys, and why and by whom an order was cancelled.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as table:
        table.add_column(sa.Column("cancellation_reason", sa.String(32)))
        table.add_column(sa.Column("cancellation_note", sa.Text))
        table.add_column(
            sa.Column("cancelled_by_key", sa.Integer, sa.ForeignKey("api_keys.id", name="fk_orders_cancelled_by_key"))
        )
        table.add_column(sa.Column("cancelled_by_operator", sa.Text))
    with op.batch_alter_table("cancellation_attempts") as table:
        table.add_column(sa.Column("replayed", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "idempotency_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("outcome", sa.Integer),
        sa.Column("order_id", sa.String(36)),
        sa.Column("order_number", sa.String(32)),
        sa.Column("order_ref", sa.Integer, sa.ForeignKey("orders.id")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("api_key_id", "key", name="uq_idempotency_keys_api_key_id_key"),
    )
    op.create_index("ix_idempotency_keys_expires_at", "idempotency_keys", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_idempotency_keys_expires_at", "idempotency_keys")
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("cancellation_attempts") as table:
        table.drop_column("replayed")
    with op.batch_alter_table("orders") as table:
        table.drop_column("cancelled_by_operator")
        table.drop_column("cancelled_by_key")
        table.drop_column("cancellation_note")
        table.drop_column("cancellation_reason")
