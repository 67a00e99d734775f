"""The console's waiting list: a partial index on conversations a person has.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07

The console inbox lists conversations a person has (mode human or paused) longest wait first, and its header shows
how many wait. Without an index both read every conversation; bot conversations, nearly all of them, are not in
this partial index, so it stays as small as the number of handed-off conversations.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

HANDED_OFF = sa.text("mode IN ('human', 'paused')")


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.create_index(
            "ix_conversations_handed_off",
            ["last_inbound_at", "id"],
            postgresql_where=HANDED_OFF,
            sqlite_where=HANDED_OFF,
        )


def downgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_handed_off")
