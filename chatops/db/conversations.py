"""Read queries for the admin API and the CLI: conversations with filters and a cursor, and one in detail.

The list is ordered by ``updated_at`` then ``id``, newest first. The cursor is the (updated_at, id) of the last
row of a page, opaque to clients (URL-safe base64); the next page starts strictly after it, so rows do not repeat
or go missing between pages while nothing changes. A conversation updated between two page requests moves to the
front and may be seen twice or not at all; a client that needs a snapshot filters with ``updated_before``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from chatops.db.tables import HANDED_OFF, conversations, inbound_messages, outbound_messages, turns
from chatops.errors import ChatopsError

DETAIL_LIMIT = 200  # messages and turns shown in a conversation's detail: the newest ones


class InvalidCursorError(ChatopsError):
    """A pagination cursor that this server did not make."""


class ConversationNotFoundError(ChatopsError):
    """No conversation has that id."""


@dataclass(frozen=True)
class ConversationFilter:
    """What to list; None means no restriction. ``waiting``: a person has it and the user spoke last."""

    channel: str | None = None
    stage: str | None = None
    mode: str | None = None
    waiting: bool | None = None
    updated_since: datetime | None = None
    updated_before: datetime | None = None


@dataclass(frozen=True)
class ConversationPage:
    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class ConversationDetail:
    conversation: dict[str, Any]
    messages: list[dict[str, Any]] = field(default_factory=list)
    turns: list[dict[str, Any]] = field(default_factory=list)


_SUMMARY = [
    conversations.c.id,
    conversations.c.channel,
    conversations.c.account_id,
    conversations.c.user_id,
    conversations.c.user_name,
    conversations.c.stage,
    conversations.c.mode,
    conversations.c.turn_count,
    conversations.c.last_inbound_at,
    conversations.c.last_operator_at,
    conversations.c.handoff_at,
    conversations.c.created_at,
    conversations.c.updated_at,
]


def encode_cursor(updated_at: datetime, conversation_id: int) -> str:
    raw = f"{updated_at.isoformat()}|{conversation_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    """Raises InvalidCursorError."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, ident = raw.partition("|")
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, int(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursorError(
            "invalid cursor", hint="pass the next_cursor of a previous page unchanged, or none for the first page"
        ) from None


def waiting_clause() -> sa.ColumnElement[bool]:
    """A person has the conversation and the user wrote after the last operator message."""
    c = conversations.c
    return sa.and_(
        sa.text(HANDED_OFF),  # literal, as the partial index's condition (tables.HANDED_OFF)
        c.last_inbound_at.is_not(None),
        sa.or_(c.last_operator_at.is_(None), c.last_inbound_at > c.last_operator_at),
    )


@dataclass(frozen=True)
class WaitingList:
    """Conversations waiting for a person: the longest waits, and how many wait in all."""

    items: list[dict[str, Any]]  # longest wait first
    total: int  # how many wait in all (``items`` holds at most the limit)


def waiting_conversations(db: sa.Engine, *, filters: ConversationFilter, limit: int) -> WaitingList:
    """Conversations waiting for a person under ``filters`` (its ``waiting`` is ignored), longest wait first.

    Both queries read only the partial index of handed-off conversations, whatever the number of bot ones.
    """
    c = conversations.c
    where = [waiting_clause()]
    where += [conversations.c[name] == value for name, value in _equal_filters(filters)]
    rows = sa.select(*_SUMMARY).where(*where).order_by(c.last_inbound_at, c.id).limit(limit)
    total = sa.select(sa.func.count()).select_from(conversations).where(*where)
    with db.connect() as connection:
        items = [dict(row._mapping) for row in connection.execute(rows)]
        return WaitingList(items, len(items) if len(items) < limit else connection.execute(total).scalar_one())


def _equal_filters(filters: ConversationFilter) -> list[tuple[str, str]]:
    return [
        (name, value)
        for name, value in (("channel", filters.channel), ("stage", filters.stage), ("mode", filters.mode))
        if value is not None
    ]


def list_conversations(
    db: sa.Engine, *, filters: ConversationFilter, limit: int = 50, cursor: str | None = None
) -> ConversationPage:
    """One page of conversations, newest update first. Raises InvalidCursorError."""
    c = conversations.c
    query = sa.select(*_SUMMARY).order_by(c.updated_at.desc(), c.id.desc()).limit(limit + 1)
    for column, value in _equal_filters(filters):
        query = query.where(conversations.c[column] == value)
    if filters.waiting is not None:
        query = query.where(waiting_clause() if filters.waiting else sa.not_(waiting_clause()))
    if filters.updated_since is not None:
        query = query.where(c.updated_at >= filters.updated_since)
    if filters.updated_before is not None:
        query = query.where(c.updated_at < filters.updated_before)
    if cursor is not None:
        at, ident = decode_cursor(cursor)
        query = query.where(sa.or_(c.updated_at < at, sa.and_(c.updated_at == at, c.id < ident)))
    with db.connect() as connection:
        rows = [dict(row._mapping) for row in connection.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if more else None
    return ConversationPage(rows, encode_cursor(last["updated_at"], last["id"]) if last else None)


def get_conversation(db: sa.Engine | sa.Connection, conversation_id: int) -> dict[str, Any]:
    """The conversation's summary row plus its state. Raises ConversationNotFoundError."""
    query = sa.select(*_SUMMARY, conversations.c.state).where(conversations.c.id == conversation_id)
    if isinstance(db, sa.Connection):
        row = db.execute(query).first()
    else:
        with db.connect() as connection:
            row = connection.execute(query).first()
    if row is None:
        raise ConversationNotFoundError(f"no conversation with id {conversation_id}")
    return dict(row._mapping)


def conversation_detail(db: sa.Engine, conversation_id: int) -> ConversationDetail:
    """The conversation, its newest messages both ways (one timeline, oldest first) and its newest turns."""
    summary = get_conversation(db, conversation_id)
    i, o, t = inbound_messages.c, outbound_messages.c, turns.c
    with db.connect() as connection:
        inbound = connection.execute(
            sa.select(i.id, i.kind, i.text, i.received_at, i.status, i.error, i.turn_id)
            .where(i.conversation_id == conversation_id)
            .order_by(i.id.desc())
            .limit(DETAIL_LIMIT)
        ).all()
        outbound = connection.execute(
            sa.select(o.id, o.body, o.created_at, o.status, o.error_code, o.error, o.turn_id, o.sent_at, o.sent_by)
            .where(o.conversation_id == conversation_id)
            .order_by(o.id.desc())
            .limit(DETAIL_LIMIT)
        ).all()
        turn_rows = connection.execute(
            sa.select(
                t.id,
                t.started_at,
                t.finished_at,
                t.stage_before,
                t.stage_after,
                t.user_text,
                t.model,
                t.intent,
                t.ai_response,
                t.usage,
                t.latency_ms,
                t.template_versions,
                t.bot_version,
                t.error,
            )
            .where(t.conversation_id == conversation_id)
            .order_by(t.id.desc())
            .limit(DETAIL_LIMIT)
        ).all()
    messages: list[dict[str, Any]] = [
        {
            "direction": "in",
            "id": row.id,
            "at": row.received_at,
            "kind": row.kind,
            "text": row.text,
            "status": row.status,
            "error": row.error,
            "turn_id": row.turn_id,
        }
        for row in inbound
    ]
    for row in outbound:
        body = row.body or {}
        messages.append(
            {
                "direction": "out",
                "id": row.id,
                "at": row.created_at,
                "kind": body.get("kind", "text"),
                "text": body.get("text") or (body.get("template") or {}).get("name"),
                "status": row.status,
                "error_code": row.error_code,
                "error": row.error,
                "turn_id": row.turn_id,
                "sent_at": row.sent_at,
                "sent_by": row.sent_by,
            }
        )
    messages.sort(key=lambda message: (message["at"], message["direction"] == "out", message["id"]))
    return ConversationDetail(
        conversation=summary,
        messages=messages[-DETAIL_LIMIT:],
        turns=[dict(row._mapping) for row in reversed(turn_rows)],
    )
