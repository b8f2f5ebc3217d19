"""API codes, orders and the record of cancellation attempts.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_PRODUCTION = (
    "'Draft', 'Ordered', 'Processing', 'InProduction', 'ReadyToShip', 'ReadyToPickUp', "
    "'Shipped', 'Delivered', 'Cancelled', 'Invalid'"
)
_PAYMENT = "'PaymentPending', 'PaymentOK', 'PaymentNOK'"


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("code_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("environment", sa.String(16), nullable=False),
        sa.Column("name", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "orders",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("order_id", sa.String(36), nullable=False, unique=True),
        sa.Column("order_number", sa.String(32), nullable=False, unique=True),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("payment_status", sa.String(16), nullable=False),
        sa.Column("engineer", sa.Text),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("cancelled_at", sa.DateTime(timezone=True)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN ({_PRODUCTION})", name="ck_orders_status"),
        sa.CheckConstraint(f"payment_status IN ({_PAYMENT})", name="ck_orders_payment_status"),
    )
    op.create_index("ix_orders_api_key_id", "orders", ["api_key_id"])
    op.create_table(
        "cancellation_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("order_ref", sa.Integer, sa.ForeignKey("orders.id")),
        sa.Column("outcome", sa.Integer, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
    )
    op.create_index("ix_cancellation_attempts_order_ref", "cancellation_attempts", ["order_ref"])
    op.create_index("ix_cancellation_attempts_api_key_id", "cancellation_attempts", ["api_key_id"])


def downgrade() -> None:
    op.drop_table("cancellation_attempts")
    op.drop_table("orders")
    op.drop_table("api_keys")
