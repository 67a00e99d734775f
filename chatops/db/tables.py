"""The data model of DESIGN.md section 3 as SQLAlchemy Core tables (one schema for SQLite and PostgreSQL).

Times are stored in UTC and always come back timezone-aware (:class:`UTCDateTime`), so code never compares
naive and aware datetimes, whichever database is underneath.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# JSONB on PostgreSQL (indexable, compact), JSON text on SQLite.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp stored as UTC and read back as an aware UTC datetime. Naive input is refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _created() -> sa.Column[datetime]:
    return sa.Column("created_at", UTCDateTime(), nullable=False)


# Conversations a person has. Queries repeat it word for word (chatops.db.conversations): the planners use the
# partial index below only when a query's condition visibly implies the index's.
HANDED_OFF = "mode IN ('human', 'paused')"

conversations = sa.Table(
    "conversations",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(64), nullable=False),
    sa.Column("user_name", sa.String(256)),
    sa.Column("stage", sa.String(128)),
    sa.Column("state", JSONType, nullable=False, default=dict),
    sa.Column("mode", sa.String(16), nullable=False, default="bot"),
    sa.Column("turn_count", sa.Integer, nullable=False, default=0),
    sa.Column("session_started_at", UTCDateTime()),
    sa.Column("last_inbound_at", UTCDateTime()),
    sa.Column("locked_by", sa.String(128)),
    sa.Column("locked_until", UTCDateTime()),
    _created(),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("handoff_at", UTCDateTime()),  # when a person took it (mode human/paused); NULL in bot mode
    sa.Column("last_operator_at", UTCDateTime()),  # the last operator message
    sa.UniqueConstraint("channel", "account_id", "user_id"),
    sa.Index("ix_conversations_updated_at", "updated_at", "id"),  # the admin API's list and its cursor
    # The console's waiting list, longest wait first: only conversations a person has (migration 0007).
    sa.Index(
        "ix_conversations_handed_off",
        "last_inbound_at",
        "id",
        postgresql_where=sa.text(HANDED_OFF),
        sqlite_where=sa.text(HANDED_OFF),
    ),
    sa.CheckConstraint("mode IN ('bot', 'human', 'paused')", name="mode"),
)

inbound_messages = sa.Table(
    "inbound_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),
    sa.Column("provider_message_id", sa.String(256), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("text", sa.Text),
    sa.Column("payload", JSONType, nullable=False, default=dict),
    sa.Column("raw", JSONType, nullable=False, default=dict),
    sa.Column("provider_timestamp", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    sa.Column("available_at", UTCDateTime(), nullable=False),  # received_at + debounce window
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("error", sa.Text),
    sa.Column("turn_id", BigId, sa.ForeignKey("turns.id", ondelete="SET NULL")),
    sa.UniqueConstraint("channel", "provider_message_id"),
    sa.CheckConstraint("status IN ('pending', 'processing', 'done', 'failed', 'skipped')", name="status"),
    # The worker's queue: only pending rows, so a claim costs the backlog, never the table (docs/scaling.md).
    sa.Index(
        "ix_inbound_messages_pending",
        "conversation_id",
        "id",
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    ),
    sa.Index("ix_inbound_messages_conversation", "conversation_id", "id"),
    sa.Index("ix_inbound_messages_turn_id", "turn_id"),
)

turns = sa.Table(
    "turns",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime(), nullable=False),
    sa.Column("stage_before", sa.String(128)),
    sa.Column("stage_after", sa.String(128)),
    sa.Column("stage_answered", sa.String(128)),  # the stage whose reply/prompt answered (before `next` moved on)
    sa.Column("inbound_ids", JSONType, nullable=False, default=list),
    sa.Column("user_text", sa.Text),
    sa.Column("variables", JSONType, nullable=False, default=dict),
    sa.Column("prompt", JSONType),  # the rendered messages sent to the model
    sa.Column("model", sa.String(128)),
    sa.Column("parameters", JSONType),
    sa.Column("intent", sa.String(128)),
    sa.Column("ai_response", sa.Text),
    sa.Column("usage", JSONType),
    sa.Column("latency_ms", sa.Float),
    sa.Column("template_versions", JSONType, nullable=False, default=dict),
    sa.Column("bot_version", sa.String(64)),
    sa.Column("replies", JSONType, nullable=False, default=list),
    sa.Column("error", sa.Text),
    # Conversation memory as the turn saw it and left it (replay restores state_before), and an extract: stage's
    # request, raw answer and validation errors.
    sa.Column("state_before", JSONType, nullable=False, default=dict, server_default=sa.text("'{}'")),
    sa.Column("state_after", JSONType, nullable=False, default=dict, server_default=sa.text("'{}'")),
    sa.Column("extraction", JSONType),
    sa.Index("ix_turns_conversation", "conversation_id", "id"),
)

outbound_messages = sa.Table(
    "outbound_messages",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("turn_id", BigId, sa.ForeignKey("turns.id", ondelete="SET NULL")),
    sa.Column("body", JSONType, nullable=False),
    sa.Column("reply_to", sa.String(256)),  # the inbound provider id this answers (WhatsApp mark-as-read)
    sa.Column("status", sa.String(16), nullable=False, default="pending"),
    sa.Column("provider_message_id", sa.String(256)),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    # When the next send attempt is due; NULL once the row is sent or failed. The sender's queue index is keyed on
    # it rather than on status, so delivery reports (sent → delivered → read) touch no indexed column: HOT updates.
    sa.Column("next_attempt_at", UTCDateTime()),
    sa.Column("error_code", sa.Integer),
    sa.Column("error", sa.Text),
    _created(),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime()),
    # The sender holding a `sending` row and until when (heartbeated while the request runs; docs/operations.md).
    sa.Column("locked_by", sa.String(128)),
    sa.Column("locked_until", UTCDateTime()),
    sa.Column("sent_by", sa.String(128)),  # an operator message: who sent it (API key name or cli:user); NULL: the bot
    sa.CheckConstraint("status IN ('pending', 'sending', 'sent', 'delivered', 'read', 'failed')", name="status"),
    sa.Index(
        "ix_outbound_messages_unsent",
        "conversation_id",
        "id",
        postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
    ),
    sa.Index("ix_outbound_messages_provider_id", "provider_message_id"),
    sa.Index("ix_outbound_messages_conversation", "conversation_id", "id"),
    sa.Index("ix_outbound_messages_sent", "conversation_id", "sent_at"),  # Messenger watermarks
    sa.Index("ix_outbound_messages_turn_id", "turn_id"),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(128), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False, unique=True),
    sa.Column("hash", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    _created(),
    sa.Column("last_used_at", UTCDateTime()),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("expires_at", UTCDateTime()),
    sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="role"),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("api_key_id", BigId, sa.ForeignKey("api_keys.id", ondelete="SET NULL")),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256)),
    sa.Column("details", JSONType),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False, default="ok", server_default=sa.text("'ok'")),
    sa.Column("client_address", sa.String(64)),
    sa.Index("ix_audit_log_at", "at"),
)

# One row per accepted bot reload (admin API or CLI): every process compares the newest id with the one it loaded
# and reloads stages.yaml and the templates from its own disk when they differ.
bot_reloads = sa.Table(
    "bot_reloads",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

# The operator console (/console): staff accounts, their server-side sessions (so a session can be revoked),
# internal notes on conversations, and the console's cookie-signing secret (shared by every web process).
staff_accounts = sa.Table(
    "staff_accounts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("email", sa.String(254), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(256), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("disabled", sa.Boolean, nullable=False, default=False, server_default=sa.false()),
    _created(),
    sa.Column("last_login_at", UTCDateTime()),
    sa.CheckConstraint("role IN ('admin', 'operator', 'viewer')", name="role"),
)

staff_sessions = sa.Table(
    "staff_sessions",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("staff_id", BigId, sa.ForeignKey("staff_accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),  # SHA-256 of the random session token
    _created(),
    sa.Column("last_seen_at", UTCDateTime(), nullable=False),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("client_address", sa.String(64)),
    sa.Index("ix_staff_sessions_staff_id", "staff_id"),
)

conversation_notes = sa.Table(
    "conversation_notes",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("conversation_id", BigId, sa.ForeignKey("conversations.id", ondelete="CASCADE"), nullable=False),
    sa.Column("author", sa.String(254), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    _created(),
    sa.Index("ix_conversation_notes_conversation_id", "conversation_id", "id"),
)

console_secrets = sa.Table(
    "console_secrets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)
