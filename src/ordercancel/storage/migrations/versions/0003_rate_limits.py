"""A rate-limit policy of an API key's own, overriding ORDERCANCEL_RATE_LIMIT.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the setting's limit; "none": no limit for this key; else a rate such as 500/second.
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("rate_limit", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("rate_limit")
