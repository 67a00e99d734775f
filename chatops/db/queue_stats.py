"""How much work waits in the queues: backlog per queue and channel, and the age of the oldest due row.

Both queries read the partial indexes of the waiting rows (and each waiting row's conversation by key), so they
cost the backlog, never the tables, whatever the planner's statistics say (see :mod:`chatops.db.queue_plans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from chatops.db.inbox import PENDING
from chatops.db.queue_plans import index_lookups_only
from chatops.db.tables import conversations, inbound_messages, outbound_messages


@dataclass(frozen=True)
class QueueDepth:
    """One queue on one channel: rows waiting (due or not) and how long the oldest due one has been due."""

    queue: str  # "inbound" (the workers'), "outbound" (the sender's) or "sending" (replies whose request is in flight)
    channel: str
    backlog: int
    oldest_due_seconds: float


def queue_depths(engine: sa.Engine, *, now: datetime) -> list[QueueDepth]:
    """The inbound queue (pending messages), the outbound queue (pending rows) and the replies in flight
    (``sending``) per channel.

    Due means ``available_at`` (inbound) or ``next_attempt_at`` (outbound) has passed; a queue with nothing due
    reports an age of 0. A ``sending`` row's age counts from its claim: past a few seconds plus
    ``CHATOPS_LEASE_SECONDS`` it was left by a dead sender and is not being taken back. Raises SQLAlchemy errors
    when the database fails.
    """
    m, o, c = inbound_messages.c, outbound_messages.c, conversations.c
    inbound = (
        sa.select(m.channel, sa.func.count(), sa.func.min(sa.case((m.available_at <= now, m.available_at))))
        .where(PENDING)
        .group_by(m.channel)
    )
    outbound = (
        sa.select(c.channel, sa.func.count(), sa.func.min(sa.case((o.next_attempt_at <= now, o.next_attempt_at))))
        .select_from(outbound_messages.join(conversations, c.id == o.conversation_id))
        .where(o.next_attempt_at.is_not(None), o.status == "pending")
        .group_by(c.channel)
    )
    sending = (
        sa.select(c.channel, sa.func.count(), sa.func.min(o.updated_at))
        .select_from(outbound_messages.join(conversations, c.id == o.conversation_id))
        .where(o.next_attempt_at.is_not(None), o.status == "sending")
        .group_by(c.channel)
    )
    depths = []
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            index_lookups_only(connection)
        for queue, query in (("inbound", inbound), ("outbound", outbound), ("sending", sending)):
            for channel, backlog, oldest in connection.execute(query):
                age = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
                depths.append(QueueDepth(queue, str(channel), int(backlog), age))
    return depths
