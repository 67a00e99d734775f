"""Turns record conversation memory: the state before and after, and an extract: stage's extraction.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    """Add turns.state_before, turns.state_after (existing turns: empty) and turns.extraction."""
    with op.batch_alter_table("turns") as batch:
        batch.add_column(sa.Column("state_before", JSON, nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("state_after", JSON, nullable=False, server_default=sa.text("'{}'")))
        batch.add_column(sa.Column("extraction", JSON, nullable=True))


def downgrade() -> None:
    """Drop the three columns."""
    with op.batch_alter_table("turns") as batch:
        batch.drop_column("extraction")
        batch.drop_column("state_after")
        batch.drop_column("state_before")
