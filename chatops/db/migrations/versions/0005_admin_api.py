"""Admin API: key expiry, audit outcome and client address, handoff times, operator messages, bot reloads.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27

- api_keys.expires_at: a key may expire (NULL: never).
- audit_log.outcome (``ok``, ``denied``, ``rejected``, ``failed``) and audit_log.client_address.
- conversations.handoff_at (when a person took the conversation; NULL in bot mode) and
  conversations.last_operator_at (the last operator message: "waiting for a person" compares it with
  last_inbound_at).
- outbound_messages.sent_by: the API key (or CLI user) that sent an operator message; NULL for the bot's.
- bot_reloads: one row per accepted reload; every process compares the newest id with the one it loaded.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIME = sa.DateTime(timezone=True)
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Add the columns (all nullable or defaulted: existing rows stay valid) and the bot_reloads table."""
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("expires_at", TIME, nullable=True))
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("outcome", sa.String(16), nullable=False, server_default=sa.text("'ok'")))
        batch.add_column(sa.Column("client_address", sa.String(64), nullable=True))
        batch.create_index("ix_audit_log_at", ["at"])
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("handoff_at", TIME, nullable=True))
        batch.add_column(sa.Column("last_operator_at", TIME, nullable=True))
        batch.create_index("ix_conversations_updated_at", ["updated_at", "id"])
    with op.batch_alter_table("outbound_messages") as batch:
        batch.add_column(sa.Column("sent_by", sa.String(128), nullable=True))
    op.create_table(
        "bot_reloads",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("at", TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bot_reloads"),
    )


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_table("bot_reloads")
    with op.batch_alter_table("outbound_messages") as batch:
        batch.drop_column("sent_by")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index("ix_conversations_updated_at")
        batch.drop_column("last_operator_at")
        batch.drop_column("handoff_at")
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_index("ix_audit_log_at")
        batch.drop_column("client_address")
        batch.drop_column("outcome")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("expires_at")
