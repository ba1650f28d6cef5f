"""indexes for retention and the scheduler's coalescing query

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 04:30:00

Pruning finds processed-message ids by age; the scheduler's pending query reads the outbox by event type,
its unsent rows and those sent recently.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_outbox_sent_type", "outbox", ["sent_at", "event_type"], unique=False)
    op.create_index("ix_processed_messages_processed_at", "processed_messages", ["processed_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_processed_messages_processed_at", table_name="processed_messages")
    op.drop_index("ix_outbox_sent_type", table_name="outbox")
