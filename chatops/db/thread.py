"""What the operator console shows beside :func:`chatops.db.conversations.conversation_detail`: the stored
bodies of outbound messages (buttons, template names) and the full turn traces (variables, state, prompt)."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from chatops.db.tables import outbound_messages, turns

TRACE_LIMIT = 50  # the newest turns whose full trace the console shows


def outbound_bodies(db: sa.Engine, conversation_id: int, ids: list[int]) -> dict[int, dict[str, Any]]:
    """The stored body of each of ``ids`` (of this conversation), by id."""
    if not ids:
        return {}
    o = outbound_messages.c
    with db.connect() as connection:
        rows = connection.execute(
            sa.select(o.id, o.body).where(o.conversation_id == conversation_id, o.id.in_(ids))
        ).all()
    return {row.id: row.body or {} for row in rows}


def turn_traces(db: sa.Engine, conversation_id: int, *, limit: int = TRACE_LIMIT) -> dict[int, dict[str, Any]]:
    """The newest ``limit`` turns of the conversation with everything recorded about them, by turn id."""
    t = turns.c
    query = (
        sa.select(
            t.id,
            t.started_at,
            t.stage_before,
            t.stage_answered,
            t.stage_after,
            t.user_text,
            t.variables,
            t.prompt,
            t.model,
            t.parameters,
            t.intent,
            t.usage,
            t.latency_ms,
            t.error,
            t.state_before,
            t.state_after,
        )
        .where(t.conversation_id == conversation_id)
        .order_by(t.id.desc())
        .limit(limit)
    )
    with db.connect() as connection:
        return {row.id: dict(row._mapping) for row in connection.execute(query)}
