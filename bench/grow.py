"""Grow a migrated PostgreSQL database the way a busy shop grows it, with SQL only (seconds per million rows).

``grow`` writes ``messages`` answered inbound messages spread over ``conversations`` conversations, one turn per
message (prompt, variables, AI response) and one outbound reply per turn, delivered and read: the history a
deployment accumulates. ``add_backlog`` then adds work waiting in the queues (pending inbound messages on distinct
conversations, unsent outbound rows). Used by ``bench/scale.py`` and by ``tests/test_queue_plans.py``.
"""

from __future__ import annotations

import sqlalchemy as sa

ACCOUNT = "106540352242922"

_CONVERSATIONS = """
INSERT INTO conversations (channel, account_id, user_id, user_name, stage, state, mode, turn_count,
                           last_inbound_at, created_at, updated_at)
SELECT 'whatsapp', :account, (15550000000 + g)::text, 'User ' || g, 'triage', '{}', 'bot', :messages / :conversations,
       now() - interval '1 hour', now() - interval '60 days', now() - interval '1 hour'
FROM generate_series(1, :conversations) AS g
"""

_TURNS = """
INSERT INTO turns (conversation_id, started_at, finished_at, stage_before, stage_after, stage_answered,
                   inbound_ids, user_text, variables, prompt, model, parameters, ai_response, usage, latency_ms,
                   template_versions, bot_version, replies)
SELECT 1 + (g % :conversations), t, t + interval '800 milliseconds', 'triage', 'triage', 'triage',
       jsonb_build_array(g), 'where is my order ' || g,
       jsonb_build_object('user', jsonb_build_object('id', (15550000000 + 1 + g % :conversations)::text)),
       jsonb_build_array(jsonb_build_object('role', 'system', 'content', 'You answer for Northwind.'),
                         jsonb_build_object('role', 'user', 'content', 'where is my order ' || g)),
       'gpt-4o-mini', '{"temperature": 0.3}', 'It ships tomorrow (' || g || ').', '{"total_tokens": 120}', 800,
       '{"triage.j2": "abc123"}', 'v1', jsonb_build_array(jsonb_build_object('text', 'It ships tomorrow.'))
FROM generate_series(1, :messages) AS g, LATERAL (SELECT now() - interval '60 days' + g * :step AS t) AS at
"""

_INBOUND = """
INSERT INTO inbound_messages (conversation_id, channel, provider_message_id, kind, text, payload, raw,
                              provider_timestamp, received_at, available_at, status, attempts, turn_id)
SELECT 1 + (g % :conversations), 'whatsapp', 'wamid.in.' || g, 'text', 'where is my order ' || g,
       '{"type": "text"}', jsonb_build_object('id', 'wamid.in.' || g, 'type', 'text',
                                              'text', jsonb_build_object('body', 'where is my order ' || g)),
       t, t, t, 'done', 1, g
FROM generate_series(1, :messages) AS g, LATERAL (SELECT now() - interval '60 days' + g * :step AS t) AS at
"""

_OUTBOUND = """
INSERT INTO outbound_messages (conversation_id, turn_id, body, status, provider_message_id, attempts,
                               next_attempt_at, created_at, updated_at, sent_at)
SELECT 1 + (g % :conversations), g, '{"kind": "text", "text": "It ships tomorrow."}', 'read', 'wamid.out.' || g, 1,
       NULL, t, t, t
FROM generate_series(1, :messages) AS g, LATERAL (SELECT now() - interval '60 days' + g * :step AS t) AS at
"""

_PENDING_INBOUND = """
INSERT INTO inbound_messages (conversation_id, channel, provider_message_id, kind, text, payload, raw,
                              provider_timestamp, received_at, available_at, status, attempts)
SELECT 1 + (g % :conversations), 'whatsapp', 'wamid.backlog.' || :tag || '.' || g, 'text', 'hello ' || g,
       '{"type": "text"}', '{}', now(), now(), now() - interval '1 second', 'pending', 0
FROM generate_series(1, :count) AS g
"""

_PENDING_OUTBOUND = """
INSERT INTO outbound_messages (conversation_id, body, status, attempts, next_attempt_at, created_at, updated_at)
SELECT 1 + (g % :conversations), '{"kind": "text", "text": "hello"}', 'pending', 0,
       now() - interval '1 second', now(), now()
FROM generate_series(1, :count) AS g
"""


def grow(connection: sa.Connection, *, messages: int, conversations: int) -> None:
    """Write the history: ``conversations`` conversations, ``messages`` inbound messages, turns and replies."""
    seconds = max(60 * 86400 // max(messages, 1), 1)
    params = {"messages": messages, "conversations": conversations, "account": ACCOUNT}
    connection.execute(sa.text(_CONVERSATIONS), params)
    for sql in (_TURNS, _INBOUND, _OUTBOUND):  # spread over 60 days; an int, so formatting it in is safe
        connection.execute(sa.text(sql.replace(":step", f"interval '{int(seconds)} seconds'")), params)


def add_backlog(
    connection: sa.Connection, *, inbound: int = 0, outbound: int = 0, conversations: int, tag: str = "b"
) -> None:
    """Add ``inbound`` pending messages and ``outbound`` due unsent rows, spread over ``conversations``."""
    if inbound:
        connection.execute(sa.text(_PENDING_INBOUND), {"count": inbound, "conversations": conversations, "tag": tag})
    if outbound:
        connection.execute(sa.text(_PENDING_OUTBOUND), {"count": outbound, "conversations": conversations})


def analyze(connection: sa.Connection) -> None:
    """Take fresh planner statistics of the queue tables (what autovacuum would do at some point)."""
    for table in ("conversations", "inbound_messages", "outbound_messages", "turns"):
        connection.execute(sa.text(f"ANALYZE {table}"))
