"""The inbox: webhook events in, conversations claimed by workers, turns committed.

``store_events`` (in :mod:`chatops.db.ingest`, re-exported here) is the webhook's single transaction (nothing is
acknowledged before it commits);
``claim_conversation`` hands one conversation with due messages to one worker under a lease;
``complete_turn`` commits a turn, its outbound messages, the new conversation state and the inbound statuses
together, and only while the worker still holds the lease.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatops.channels.events import InboundMessage, OutboundMessage
from chatops.db.connect import storage_errors
from chatops.db.ingest import StoreResult as StoreResult  # re-exported: the webhook's write lives there
from chatops.db.ingest import store_events as store_events
from chatops.db.queue_plans import index_lookups_only
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from chatops.db.wakeups import announce
from chatops.errors import StorageError
from chatops.text import clean_text

log = logging.getLogger(__name__)


class LeaseLost(StorageError):
    """The worker's lease on a conversation expired and another worker took it; its turn was not committed."""


@dataclass(frozen=True)
class Conversation:
    """A conversation as a worker sees it while holding its lease."""

    id: int
    channel: str
    account_id: str
    user_id: str
    user_name: str | None
    stage: str | None
    state: dict[str, Any]
    mode: str
    turn_count: int
    session_started_at: datetime | None
    last_inbound_at: datetime | None
    taken_over: bool = False  # claimed from a holder whose lease had run out (a crashed or stuck worker)


@dataclass(frozen=True)
class PendingMessage:
    """An inbound message waiting for its turn, with its row id and attempts so far."""

    id: int
    message: InboundMessage
    received_at: datetime
    available_at: datetime
    attempts: int


@dataclass(frozen=True)
class TurnRecord:
    """The full trace of one turn, as stored in ``turns`` (replay needs nothing else)."""

    started_at: datetime
    finished_at: datetime
    stage_before: str | None
    stage_after: str | None
    stage_answered: str | None = None
    user_text: str | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    prompt: list[dict[str, Any]] | None = None
    model: str | None = None
    parameters: dict[str, Any] | None = None
    intent: str | None = None
    ai_response: str | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    template_versions: dict[str, str] = field(default_factory=dict)
    bot_version: str | None = None
    replies: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    state_before: dict[str, Any] = field(default_factory=dict)  # conversation memory as the turn saw it
    state_after: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] | None = None  # an extract: stage's request, raw answer and validation errors


@dataclass(frozen=True)
class PastTurn:
    """A previous turn of the same conversation, for the AI's history window and the session timeout."""

    user_text: str | None
    replies: tuple[str, ...]
    finished_at: datetime


@dataclass(frozen=True)
class ConversationChange:
    """The conversation's state after a turn."""

    stage: str | None
    state: dict[str, Any]
    mode: str
    session_started_at: datetime | None


def claim_conversation(
    engine: sa.Engine, *, worker_id: str, now: datetime, lease: timedelta, only: int | None = None
) -> Conversation | None:
    """Lease the conversation whose oldest due message waits longest, or return ``None`` when none is due.

    A conversation is due when its oldest pending message's ``available_at`` has passed (so a message waiting
    for a retry holds back the newer ones: order is kept) and it has no live lease (an expired lease — a crashed
    worker — counts as free). PostgreSQL skips rows other workers are locking. ``only`` restricts the claim to
    one conversation (``simulate`` answers its own conversation and never another's). The holder renews the
    lease while its turn runs (:mod:`chatops.db.leases`).
    """
    c = conversations.c
    heads = _heads(only)
    head = inbound_messages.alias("head")
    query = (
        sa.select(c.id, c.locked_until)
        .select_from(
            heads.join(head, head.c.id == heads.c.head_id).join(conversations, c.id == heads.c.conversation_id)
        )
        .where(head.c.available_at <= now, c.mode == "bot", sa.or_(c.locked_until.is_(None), c.locked_until < now))
        .order_by(heads.c.position)
        .limit(1)
    )
    with storage_errors(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            index_lookups_only(connection)
            query = query.with_for_update(of=conversations, skip_locked=True)
        claimed = connection.execute(query).first()
        if claimed is None:
            return None
        row = connection.execute(
            conversations.update()
            .where(c.id == claimed.id)
            .values(locked_by=worker_id, locked_until=now + lease)
            .returning(*conversations.c)
        ).one()
    # A released lease is NULL: a time left behind means its holder stopped renewing it.
    return replace(_conversation(row), taken_over=claimed.locked_until is not None)


# Pending rows only, through the partial index ix_inbound_messages_pending. The literal (not a bound parameter)
# lets both PostgreSQL and SQLite prove the index's predicate when the statement is planned.
PENDING = inbound_messages.c.status == sa.literal_column("'pending'")


def _heads(only: int | None) -> sa.CTE:
    """Each conversation's oldest pending message (``conversation_id``, ``head_id`` = ``position``), for the claim.

    The heads are a MATERIALIZED CTE over the partial index of pending rows, so the claim reads the backlog and
    never the table, whatever the planner's statistics say: the planner cannot walk the primary key in id order
    (what it did when ANALYZE had seen a few pending rows) nor nest the "no older pending message" test inside
    the scan (quadratic in the backlog when ANALYZE had seen none). Callers order by ``position``, a copy of
    ``head_id`` that no join condition equates with a table's id, so no index scan in id order can serve the ORDER
    BY. docs/scaling.md has the measurements.
    """
    m = inbound_messages.c
    head_id = sa.func.min(m.id)
    heads_query = sa.select(m.conversation_id, head_id.label("head_id"), head_id.label("position")).where(PENDING)
    if only is not None:
        heads_query = heads_query.where(m.conversation_id == only)
    return heads_query.group_by(m.conversation_id).cte("heads").prefix_with("MATERIALIZED")


def _conversation(row: sa.Row[Any]) -> Conversation:
    return Conversation(
        id=row.id,
        channel=row.channel,
        account_id=row.account_id,
        user_id=row.user_id,
        user_name=row.user_name,
        stage=row.stage,
        state=dict(row.state or {}),
        mode=row.mode,
        turn_count=row.turn_count,
        session_started_at=row.session_started_at,
        last_inbound_at=row.last_inbound_at,
    )


def pending_messages(engine: sa.Engine, conversation: Conversation) -> list[PendingMessage]:
    """The conversation's pending messages, in arrival order (the first one decides when they are due).

    A row that cannot be read back into a message (written by hand, or by a bug) is marked ``failed`` with the
    reason and left out, so that it cannot hold its conversation and the queue up for ever.
    Raises StorageError when the database is unavailable (the worker loop survives only that error class).
    """
    m = inbound_messages.c
    query = sa.select(inbound_messages).where(m.conversation_id == conversation.id, PENDING).order_by(m.id)
    with storage_errors(engine), engine.connect() as connection:
        rows = connection.execute(query).all()
    pending: list[PendingMessage] = []
    unreadable: dict[int, str] = {}
    for row in rows:
        try:
            pending.append(_pending_message(row, conversation))
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            unreadable[row.id] = clean_text(f"unreadable stored message: {type(exc).__name__}: {exc}")[:2000]
    if unreadable:
        log.error("conversation %s: messages %s cannot be read back; marked failed", conversation.id, unreadable)
        with storage_errors(engine), engine.begin() as connection:
            for message_id, error in unreadable.items():
                connection.execute(
                    inbound_messages.update()
                    .where(m.id == message_id, PENDING)
                    .values(status="failed", error=error, attempts=m.attempts + 1)
                )
    return pending


def _pending_message(row: sa.Row[Any], conversation: Conversation) -> PendingMessage:
    return PendingMessage(
        id=row.id,
        message=InboundMessage(
            channel=row.channel,
            account_id=conversation.account_id,
            user_id=conversation.user_id,
            provider_message_id=row.provider_message_id,
            kind=row.kind,
            timestamp=row.provider_timestamp,
            text=row.text,
            user_name=conversation.user_name,
            payload=dict(row.payload or {}),
            raw=dict(row.raw or {}),
        ),
        received_at=row.received_at,
        available_at=row.available_at,
        attempts=row.attempts,
    )


def complete_turn(
    engine: sa.Engine,
    conversation: Conversation,
    *,
    worker_id: str,
    now: datetime,
    lease: timedelta,
    answered: Sequence[int],
    skipped: Sequence[int] = (),
    turn: TurnRecord | None,
    replies: Sequence[OutboundMessage] = (),
    change: ConversationChange | None = None,
    failed_error: str | None = None,
    mark_read: str | None = None,
) -> int | None:
    """Commit one turn in ONE transaction and renew the lease; returns the turn id (``None`` without a turn).

    Writes the turn, its outbound messages (the outbox), the new conversation state, and marks ``answered``
    messages ``done`` (or ``failed`` with ``failed_error``) and ``skipped`` ones ``skipped``. ``mark_read`` (the
    provider id of the answered message) rides on the first reply, so the sender marks it read when it sends.
    Wakes the senders when it wrote replies (:mod:`chatops.db.wakeups`). Raises LeaseLost, writing nothing, when
    the lease was taken over by another worker.
    """
    c, m = conversations.c, inbound_messages.c
    with storage_errors(engine), engine.begin() as connection:
        values: dict[str, Any] = {"locked_until": now + lease, "updated_at": now}
        if change is not None:
            values |= {
                "stage": change.stage,
                "state": change.state,
                "mode": change.mode,
                "session_started_at": change.session_started_at,
                # when a person got it: the admin API's waiting time and the handoff timeout count from here
                "handoff_at": None if change.mode == "bot" else sa.func.coalesce(c.handoff_at, now),
            }
        if turn is not None:
            values["turn_count"] = c.turn_count + 1
        held = connection.execute(
            conversations.update().where(c.id == conversation.id, c.locked_by == worker_id).values(**values)
        )
        if held.rowcount != 1:
            raise LeaseLost(f"conversation {conversation.id}: lease lost to another worker; turn discarded")
        turn_id = None
        if turn is not None:
            turn_id = connection.execute(
                turns.insert()
                .values(
                    conversation_id=conversation.id,
                    inbound_ids=list(answered),
                    **{name: getattr(turn, name) for name in TurnRecord.__dataclass_fields__},
                )
                .returning(turns.c.id)
            ).scalar_one()
        if replies:
            connection.execute(
                outbound_messages.insert(),
                [
                    {
                        "conversation_id": conversation.id,
                        "turn_id": turn_id,
                        "body": reply.to_json(),
                        "reply_to": mark_read if index == 0 else None,
                        "status": "pending",
                        "attempts": 0,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for index, reply in enumerate(replies)
                ],
            )
        if answered:
            connection.execute(
                inbound_messages.update()
                .where(m.id.in_(answered))
                .values(
                    status="failed" if failed_error else "done",
                    error=failed_error,
                    turn_id=turn_id,
                    attempts=m.attempts + 1,
                )
            )
        if skipped:
            connection.execute(inbound_messages.update().where(m.id.in_(skipped)).values(status="skipped"))
    if replies:  # after the commit: the senders can see the replies now
        announce(engine, "outbox")
    return turn_id


def defer_messages(engine: sa.Engine, message_ids: Sequence[int], *, error: str, available_at: datetime) -> None:
    """A turn failed: count the attempt, keep the messages pending until ``available_at`` (backoff)."""
    m = inbound_messages.c
    with storage_errors(engine), engine.begin() as connection:
        connection.execute(
            inbound_messages.update()
            .where(m.id.in_(message_ids))
            .values(attempts=m.attempts + 1, error=error, available_at=available_at)
        )


def release_conversation(engine: sa.Engine, conversation: Conversation, *, worker_id: str) -> None:
    """Give the lease back (only if still ours), so another worker may take the conversation at once."""
    c = conversations.c
    with storage_errors(engine), engine.begin() as connection:
        connection.execute(
            conversations.update()
            .where(c.id == conversation.id, c.locked_by == worker_id)
            .values(locked_by=None, locked_until=None)
        )


def recent_turns(engine: sa.Engine, conversation_id: int, *, limit: int) -> list[PastTurn]:
    """The conversation's last ``limit`` turns, oldest first."""
    t = turns.c
    query = (
        sa.select(t.user_text, t.replies, t.finished_at)
        .where(t.conversation_id == conversation_id)
        .order_by(t.id.desc())
        .limit(limit)
    )
    with storage_errors(engine), engine.connect() as connection:
        rows = connection.execute(query).all()
    return [
        PastTurn(row.user_text, tuple(r.get("text", "") for r in row.replies or ()), row.finished_at)
        for row in reversed(rows)
    ]
