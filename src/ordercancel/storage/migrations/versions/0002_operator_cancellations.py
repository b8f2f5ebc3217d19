"""Operators' cancellations in the cancellation record: a row names an API key or an operator.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_CHECK = "ck_cancellation_attempts_key_or_operator"


def upgrade() -> None:
    # On SQLite a batch rebuilds the table (it cannot drop NOT NULL in place); PostgreSQL alters it.
    with op.batch_alter_table("cancellation_attempts") as batch:
        batch.add_column(sa.Column("operator", sa.Text))
        batch.alter_column("api_key_id", existing_type=sa.Integer, nullable=True)
        batch.create_check_constraint(_CHECK, "(api_key_id IS NULL) <> (operator IS NULL)")


def downgrade() -> None:
    # An operator's row has no key to keep it under: it cannot survive the older schema.
    op.execute("DELETE FROM cancellation_attempts WHERE api_key_id IS NULL")
    with op.batch_alter_table("cancellation_attempts") as batch:
        batch.drop_constraint(_CHECK, type_="check")
        batch.alter_column("api_key_id", existing_type=sa.Integer, nullable=False)
        batch.drop_column("operator")
