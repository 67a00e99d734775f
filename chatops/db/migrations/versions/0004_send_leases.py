"""Send leases: an outbound row in ``sending`` records which sender holds it and until when.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28

A sender heartbeats ``locked_until`` while its request runs; a row whose lease has run out (its sender died) goes
back to ``pending`` within ``CHATOPS_LEASE_SECONDS``, and a restarted process takes back at once the rows its
previous incarnation held (``locked_by``), instead of waiting out a fixed stale timeout. Neither column is
indexed: the recovery queries read the unsent rows through ix_outbound_messages_unsent, and status updates stay HOT.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add outbound_messages.locked_by and locked_until (existing rows: NULL, i.e. held by no one)."""
    with op.batch_alter_table("outbound_messages") as batch:
        batch.add_column(sa.Column("locked_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    """Drop the two columns (rows left ``sending`` are then recovered by age again)."""
    with op.batch_alter_table("outbound_messages") as batch:
        batch.drop_column("locked_until")
        batch.drop_column("locked_by")
