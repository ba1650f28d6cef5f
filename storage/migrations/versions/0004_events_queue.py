"""an organization's events queue (live updates)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 05:00:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("organizations", sa.Column("events_queue_url", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("organizations", "events_queue_url")
