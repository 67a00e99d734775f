"""Queue indexes: partial indexes on pending/unsent rows, foreign-key indexes, HOT-friendly outbound status.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

- inbound: the full (status, conversation_id, available_at) index becomes a partial index on pending rows; new
  indexes on (conversation_id, id) and turn_id (deleting a turn or a conversation no longer scans the table).
- outbound: ``next_attempt_at`` is NULL once a row is sent or failed, and the sender's queue index is a partial
  index on ``next_attempt_at IS NOT NULL``; ``status`` is in no index any more, so delivery reports are HOT
  updates. New indexes on (conversation_id, sent_at) (Messenger watermarks) and turn_id.

On PostgreSQL the index builds take a SHARE lock (writes wait) and the backfill rewrites every sent row once:
on a large database run it in a quiet hour (docs/scaling.md gives the figures).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
UNSENT = sa.text("next_attempt_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_index("ix_inbound_messages_pending")
        batch.create_index(
            "ix_inbound_messages_pending",
            ["conversation_id", "id"],
            postgresql_where=PENDING,
            sqlite_where=PENDING,
        )
        batch.create_index("ix_inbound_messages_conversation", ["conversation_id", "id"])
        batch.create_index("ix_inbound_messages_turn_id", ["turn_id"])

    with op.batch_alter_table("outbound_messages") as batch:
        batch.alter_column("next_attempt_at", existing_type=sa.DateTime(timezone=True), nullable=True)
    op.execute("UPDATE outbound_messages SET next_attempt_at = NULL WHERE status NOT IN ('pending', 'sending')")
    with op.batch_alter_table("outbound_messages") as batch:
        batch.drop_index("ix_outbound_messages_pending")
        batch.create_index(
            "ix_outbound_messages_unsent",
            ["conversation_id", "id"],
            postgresql_where=UNSENT,
            sqlite_where=UNSENT,
        )
        batch.create_index("ix_outbound_messages_sent", ["conversation_id", "sent_at"])
        batch.create_index("ix_outbound_messages_turn_id", ["turn_id"])


def downgrade() -> None:
    with op.batch_alter_table("outbound_messages") as batch:
        batch.drop_index("ix_outbound_messages_turn_id")
        batch.drop_index("ix_outbound_messages_sent")
        batch.drop_index("ix_outbound_messages_unsent")
        batch.create_index("ix_outbound_messages_pending", ["status", "next_attempt_at"])
    op.execute("UPDATE outbound_messages SET next_attempt_at = updated_at WHERE next_attempt_at IS NULL")
    with op.batch_alter_table("outbound_messages") as batch:
        batch.alter_column("next_attempt_at", existing_type=sa.DateTime(timezone=True), nullable=False)

    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_index("ix_inbound_messages_turn_id")
        batch.drop_index("ix_inbound_messages_conversation")
        batch.drop_index("ix_inbound_messages_pending")
        batch.create_index("ix_inbound_messages_pending", ["status", "conversation_id", "available_at"])
