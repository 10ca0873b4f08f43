"""Query-monitor holds in the database, so that they survive a restart: ``monitor_holds``.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_holds",
        sa.Column("key_id", sa.String(32), primary_key=True),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("until", sa.DateTime(), nullable=True),
        sa.Column("detector", sa.String(100), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("monitor_holds")
