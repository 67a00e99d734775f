"""Internal notes on a conversation: written by staff in the console, read by staff, never sent to the user."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from chatops.db.conversations import get_conversation
from chatops.db.tables import conversation_notes
from chatops.errors import ChatopsError
from chatops.text import clean_text

MAX_NOTE = 4000


@dataclass(frozen=True)
class Note:
    id: int
    conversation_id: int
    author: str
    text: str
    created_at: datetime


def add_note(db: sa.Engine, conversation_id: int, *, author: str, text: str, now: datetime) -> int:
    """Store a note; returns its id. Raises ConversationNotFoundError, ChatopsError for empty or long text."""
    body = clean_text(text).strip()
    if not body:
        raise ChatopsError("a note needs text")
    if len(body) > MAX_NOTE:
        raise ChatopsError(f"a note has at most {MAX_NOTE} characters (this one has {len(body)})")
    with db.begin() as connection:
        get_conversation(connection, conversation_id)
        result = connection.execute(
            sa.insert(conversation_notes)
            .values(conversation_id=conversation_id, author=author, text=body, created_at=now)
            .returning(conversation_notes.c.id)
        )
        return int(result.scalar_one())


def list_notes(db: sa.Engine, conversation_id: int) -> list[Note]:
    """The conversation's notes, oldest first."""
    n = conversation_notes.c
    with db.connect() as connection:
        rows = connection.execute(
            sa.select(n.id, n.conversation_id, n.author, n.text, n.created_at)
            .where(n.conversation_id == conversation_id)
            .order_by(n.id)
        ).all()
    return [Note(row.id, row.conversation_id, row.author, row.text, row.created_at) for row in rows]
