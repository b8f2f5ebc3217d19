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

#: What SQLite needs to add a NOT NULL column in place; every existing row is set from created_at
#: at once, and every writer gives placed_at itself.
_SQLITE_PLACEHOLDER = "1970-01-01 00:00:00.000000"


def upgrade() -> None:
    # Both columns are added in place, never by rebuilding the table: api_keys and orders are
    # referenced by other tables, and SQLite (foreign keys on) refuses to drop a referenced table
    # that has rows, as a batch rebuild would. Hence no CHECK on the window (the service checks it).
    if op.get_bind().dialect.name == "sqlite":
        op.add_column(
            "orders",
            sa.Column("placed_at", sa.DateTime(timezone=True), nullable=False, server_default=_SQLITE_PLACEHOLDER),
        )
        # An order made before this version was placed when it was made (or imported).
        op.execute("UPDATE orders SET placed_at = created_at")
    else:
        op.add_column("orders", sa.Column("placed_at", sa.DateTime(timezone=True)))
        op.execute("UPDATE orders SET placed_at = created_at")
        op.alter_column("orders", "placed_at", existing_type=sa.DateTime(timezone=True), nullable=False)
    # Seconds. NULL: ORDERCANCEL_CANCELLATION_WINDOW; 0: no window for this key; else the key's own.
    op.add_column("api_keys", sa.Column("cancellation_window", sa.Integer))


def downgrade() -> None:
    # In place too (SQLite 3.35 drops a column without a rebuild).
    op.drop_column("api_keys", "cancellation_window")
    op.drop_column("orders", "placed_at")
