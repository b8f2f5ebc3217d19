"""When each order was placed, and an API key's own cancellation window.

Revision ID: 0006
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("orders") as table:
        table.add_column(sa.Column("placed_at", sa.DateTime(timezone=True)))
    # An order made before this version was placed when it was made (or imported).
    op.execute("UPDATE orders SET placed_at = created_at")
    with op.batch_alter_table("orders") as table:
        table.alter_column("placed_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    # Seconds. NULL: ORDERCANCEL_CANCELLATION_WINDOW; 0: no window for this key; else the key's own.
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("cancellation_window", sa.Integer))
        table.create_check_constraint("ck_api_keys_cancellation_window", "cancellation_window >= 0")


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_constraint("ck_api_keys_cancellation_window", type_="check")
        table.drop_column("cancellation_window")
    with op.batch_alter_table("orders") as table:
        table.drop_column("placed_at")
