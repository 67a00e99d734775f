"""The outbox: queries on ``outbound_messages`` for the sender and for status webhooks.

Lifecycle of a row::

    pending ──claim──▶ sending ──mark_sent──▶ sent ──status──▶ delivered ──status──▶ read
       ▲                 │  │                   └──────────── status "failed" (any time) ─────────▶ failed
       └─schedule_retry──┘  └──mark_failed──▶ failed
       └─release_outbound (token refused: no attempt used) / chatops.db.leases (the sender's lease ran out)

Every function takes the time as ``now`` (an aware datetime) and never reads the clock, so tests drive time.
Each takes an Engine (and runs its own transaction) or a Connection (and runs inside the caller's
transaction, which the caller commits). Order per conversation is kept by :func:`claim_outbound`: a row is
only claimed when no earlier row of its conversation is still unsent (``pending`` or ``sending``).
``next_attempt_at`` is set while a row is unsent and NULL once it is sent or failed: the sender's queue index is
keyed on it, so that delivery reports change no indexed column (docs/scaling.md).
Database errors propagate as SQLAlchemy errors; callers at the boundary turn them into StorageError.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY

from chatops.channels.events import Channel, OutboundMessage, StatusUpdate
from chatops.db.queue_plans import index_lookups_only
from chatops.db.tables import conversations, outbound_messages
from chatops.text import clean_text

log = logging.getLogger(__name__)

Bind = sa.Engine | sa.Connection

UNSENT = ("pending", "sending")
# Delivery progress only moves forward; "played" (a voice message was listened to) counts as read.
STATUS_RANK = {"sent": 1, "delivered": 2, "read": 3}  # delivery reports only move a row forward
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_STATUS_OF = {"sent": "sent", "delivered": "delivered", "read": "read", "played": "read"}


@dataclass(frozen=True)
class OutboundRow:
    """A claimed outbound message: where it goes, what it says, and the attempt it is on (1 for the first).

    ``last_inbound_at`` is the conversation's last user message (``None`` if there was none): the 24-hour
    customer-service window is counted from it. ``reply_to`` is the inbound provider id this row answers.
    """

    id: int
    conversation_id: int
    channel: Channel
    account_id: str
    user_id: str
    body: OutboundMessage
    reply_to: str | None
    attempts: int
    last_inbound_at: datetime | None


@contextmanager
def _transaction(bind: Bind) -> Iterator[sa.Connection]:
    if isinstance(bind, sa.Connection):
        yield bind  # the caller's transaction: it commits or rolls back
        return
    with bind.begin() as connection:
        yield connection


def claim_outbound(
    bind: Bind,
    *,
    now: datetime,
    limit: int,
    channels: Collection[Channel] | None = None,
    holder: str | None = None,
    lease: timedelta | None = None,
) -> list[OutboundRow]:
    """Claim up to ``limit`` due rows, oldest first, at most one per conversation, and mark them ``sending``.

    Due: ``pending`` with ``next_attempt_at <= now`` and no earlier unsent row in the same conversation.
    ``channels`` restricts the claim (the sender leaves out channels it cannot send on). Writes status,
    ``attempts + 1``, ``updated_at`` and the send lease (``holder``, until ``now + lease``; see
    :mod:`chatops.db.leases`) in the same transaction. On PostgreSQL rows locked by another claim are
    skipped (``FOR UPDATE SKIP LOCKED``), so concurrent senders never claim the same row; on SQLite the
    ``BEGIN IMMEDIATE`` transaction serialises claims. On PostgreSQL the claim's transaction plans with index lookups
    only (:func:`~chatops.db.queue_plans.index_lookups_only`): pass a Connection only if the rest of its transaction
    may plan that way too.
    """
    if limit <= 0 or (channels is not None and not channels):
        return []
    o = outbound_messages
    c = conversations
    heads = _unsent_heads()
    query = sa.select(
        o.c.id,
        o.c.conversation_id,
        c.c.channel,
        c.c.account_id,
        c.c.user_id,
        o.c.body,
        o.c.reply_to,
        o.c.attempts,
        c.c.last_inbound_at,
    )
    if channels is not None:
        query = query.where(c.c.channel.in_(list(channels)))
    with _transaction(bind) as connection:
        if connection.dialect.name == "postgresql":
            index_lookups_only(connection)
            # Two statements: the heads, then their rows by key (an array parameter: PostgreSQL knows its length
            # and hashes it). Joined with the heads in one statement, the plan depended on the statistics again:
            # taken before a backlog (one head expected), PostgreSQL nested a rescan of the heads, or a linear
            # search of their array, inside its scan of the queue, quadratic in the backlog (1.8 s per claim at
            # 2,000 unsent rows; docs/scaling.md).
            head_ids = list(connection.execute(sa.select(heads.c.head_id)).scalars())
            if not head_ids:
                return []
            query = query.select_from(o.join(c, c.c.id == o.c.conversation_id))
            query = query.where(o.c.id == sa.any_(sa.bindparam("heads", head_ids, type_=ARRAY(sa.BigInteger))))
            query = query.order_by(o.c.id)
        else:
            query = query.select_from(heads.join(o, o.c.id == heads.c.head_id).join(c, c.c.id == o.c.conversation_id))
            query = query.order_by(heads.c.position)
        query = query.where(o.c.status == "pending", o.c.next_attempt_at <= now)
        rows = connection.execute(query.limit(limit).with_for_update(skip_locked=True, of=o)).all()
        if not rows:
            return []
        claimed: list[OutboundRow] = []
        for row in rows:
            try:
                body = OutboundMessage.from_json(row.body)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                # Written by hand or by a bug: no attempt can send it, and as "sending" it would come back forever.
                error = clean_text(f"unreadable stored reply: {type(exc).__name__}: {exc}")[:2000]
                log.error("outbound message %s cannot be read back; marked failed: %s", row.id, error)
                connection.execute(
                    sa.update(o).where(o.c.id == row.id).values(status="failed", error=error, updated_at=now)
                )
                continue
            claimed.append(
                OutboundRow(
                    id=row.id,
                    conversation_id=row.conversation_id,
                    channel=row.channel,
                    account_id=row.account_id,
                    user_id=row.user_id,
                    body=body,
                    reply_to=row.reply_to,
                    attempts=row.attempts + 1,
                    last_inbound_at=row.last_inbound_at,
                )
            )
        if claimed:
            connection.execute(
                sa.update(o)
                .where(o.c.id.in_([row.id for row in claimed]))
                .values(
                    status="sending",
                    attempts=o.c.attempts + 1,
                    updated_at=now,
                    locked_by=holder,
                    locked_until=now + lease if lease is not None else None,
                )
            )
    return claimed


def _unsent_heads() -> sa.CTE:
    """Each conversation's oldest unsent row (``conversation_id``, ``head_id`` = ``position``), for the claim.

    Read through the partial index ix_outbound_messages_unsent (``next_attempt_at IS NOT NULL``: rows leave it when
    sent or failed), so a claim reads the unsent rows and never the table, whatever the statistics say. On SQLite the
    CTE is MATERIALIZED and the claim orders by ``position`` (a copy of ``head_id`` that no join equates with ``id``),
    so the planner can neither walk the primary key in id order nor nest an "earlier unsent row" test inside the
    scan; PostgreSQL reads the heads alone first, then their rows by key (see the claim above).
    The status test keeps the claim right even for a row whose ``next_attempt_at`` was left set.
    """
    o = outbound_messages.c
    head_id = sa.func.min(o.id)
    return (
        sa.select(o.conversation_id, head_id.label("head_id"), head_id.label("position"))
        .where(o.next_attempt_at.is_not(None), o.status.in_(UNSENT))
        .group_by(o.conversation_id)
        .cte("outbound_heads")
        .prefix_with("MATERIALIZED")
    )


def mark_sent(bind: Bind, row_id: int, *, provider_message_id: str | None, now: datetime) -> bool:
    """Record that Meta accepted row ``row_id``: status ``sent``, the provider id, ``sent_at``; errors cleared.

    Returns False when the row is no longer unsent (a status webhook got there first, or it was deleted).
    """
    return _update(
        bind,
        row_id,
        outbound_messages.c.status.in_(UNSENT),
        status="sent",
        provider_message_id=provider_message_id,
        sent_at=now,
        next_attempt_at=None,
        updated_at=now,
        error_code=None,
        error=None,
    )


def schedule_retry(
    bind: Bind, row_id: int, *, next_attempt_at: datetime, error_code: int | None, error: str, now: datetime
) -> bool:
    """Put a ``sending`` row back to ``pending`` until ``next_attempt_at``, keeping the error that caused it."""
    return _update(
        bind,
        row_id,
        outbound_messages.c.status == "sending",
        status="pending",
        next_attempt_at=next_attempt_at,
        error_code=error_code,
        error=error,
        updated_at=now,
    )


def mark_failed(bind: Bind, row_id: int, *, error_code: int | None, error: str, now: datetime) -> bool:
    """Give up on an unsent row: status ``failed`` with the Graph error code (``None`` if none) and the reason."""
    return _update(
        bind,
        row_id,
        outbound_messages.c.status.in_(UNSENT),
        status="failed",
        next_attempt_at=None,
        error_code=error_code,
        error=error,
        updated_at=now,
    )


def release_outbound(
    bind: Bind, row_id: int, *, now: datetime, error_code: int | None = None, error: str | None = None
) -> bool:
    """Put a ``sending`` row back to ``pending`` and give back the attempt its claim counted.

    For failures that are not the message's fault (the channel's token was refused): the row waits, due at once,
    until the sender may use the channel again.
    """
    o = outbound_messages
    return _update(
        bind,
        row_id,
        o.c.status == "sending",
        status="pending",
        attempts=sa.case((o.c.attempts > 0, o.c.attempts - 1), else_=0),
        error_code=error_code,
        error=error,
        updated_at=now,
    )


def count_pending(bind: Bind, *, channels: Collection[Channel]) -> dict[Channel, int]:
    """How many rows are waiting to be sent (``pending``, due or not) on each of ``channels``."""
    o = outbound_messages
    c = conversations
    query = (
        sa.select(c.c.channel, sa.func.count())
        .select_from(o.join(c, c.c.id == o.c.conversation_id))
        .where(o.c.next_attempt_at.is_not(None), o.c.status == "pending", c.c.channel.in_(list(channels)))
        .group_by(c.c.channel)
    )
    with _transaction(bind) as connection:
        counts = {row[0]: int(row[1]) for row in connection.execute(query)}
    return {channel: counts.get(channel, 0) for channel in channels}


def apply_status(bind: Bind, update: StatusUpdate, *, now: datetime) -> bool:
    """Apply a delivery report to the outbound rows it names; returns whether any row changed.

    By provider message id (WhatsApp, and Messenger ``delivered`` with mids): ``sent`` < ``delivered`` <
    ``read`` only ever move forward (``played`` counts as ``read``); ``failed`` always applies, with
    ``error_code`` and the error title (plus details), e.g. a 131047 reported after Meta accepted the send.
    Messenger reports without a mid carry a ``watermark``: every ``sent``/``delivered`` row of the conversation
    (channel + account_id + user_id) whose ``sent_at`` is at or before it becomes ``delivered`` or ``read``.

    Pass the webhook's Connection to apply it inside that transaction (nothing is committed here); an Engine
    runs its own. A report for a message id that is not stored (yet) changes nothing.
    """
    o = outbound_messages
    c = conversations
    target = status_target(update)
    if target is None:
        return False  # "sent": the row is sent or further already; no statement could change it
    status, below = target
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if below is None:
        condition: sa.ColumnElement[bool] = o.c.status != "failed"
        values["next_attempt_at"] = None  # already NULL for a sent row: the update stays HOT
        values["error_code"] = update.error_code
        values["error"] = status_error(update)
    else:
        condition = o.c.status.in_([name for name, rank in STATUS_RANK.items() if rank < below])
    if update.provider_message_id is not None:
        in_channel = sa.select(c.c.id).where(c.c.channel == update.channel)
        where = [o.c.provider_message_id == update.provider_message_id, o.c.conversation_id.in_(in_channel)]
    elif update.watermark is not None and status != "failed":
        conversation = (
            sa.select(c.c.id)
            .where(c.c.channel == update.channel, c.c.account_id == update.account_id, c.c.user_id == update.user_id)
            .scalar_subquery()
        )
        # Every earlier watermark already moved the rows it covered, so only rows sent at or after the newest row
        # already at this status (or beyond) can change. Both reads walk ix_outbound_messages_sent from the
        # watermark back: they touch the conversation's unread tail, not its whole history.
        r = o.alias("reached")
        reached = [name for name, rank in STATUS_RANK.items() if rank >= STATUS_RANK[status]]
        newest_reached = (
            sa.select(r.c.sent_at)
            .where(r.c.conversation_id == conversation, r.c.sent_at <= update.watermark, r.c.status.in_(reached))
            .order_by(r.c.sent_at.desc())
            .limit(1)
            .scalar_subquery()
        )
        where = [
            o.c.conversation_id == conversation,
            o.c.sent_at <= update.watermark,
            o.c.sent_at >= sa.func.coalesce(newest_reached, _EPOCH),
        ]
    else:
        return False
    with _transaction(bind) as connection:
        result = connection.execute(sa.update(o).where(condition, *where).values(**values))
    return bool(result.rowcount)


def status_target(update: StatusUpdate) -> tuple[str, int | None] | None:
    """The status a delivery report moves rows to, and the :data:`STATUS_RANK` a row's status must be below to
    move (``None`` for ``failed``: any row not failed yet); ``None`` for a report that can change no row
    (``sent``: a row is sent or further once it has a provider id)."""
    if update.status == "failed":
        return "failed", None
    status = _STATUS_OF[update.status]
    if STATUS_RANK[status] == min(STATUS_RANK.values()):
        return None
    return status, STATUS_RANK[status]


def status_error(update: StatusUpdate) -> str:
    """The ``error`` a ``failed`` report stores: the title, and the details when Meta gave some."""
    title = update.error_title or "reported failed by the provider"
    return f"{title}: {update.error_details}" if update.error_details else title


def _update(bind: Bind, row_id: int, condition: sa.ColumnElement[bool], **values: Any) -> bool:
    o = outbound_messages
    with _transaction(bind) as connection:
        result = connection.execute(sa.update(o).where(o.c.id == row_id, condition).values(**values))
    return bool(result.rowcount)
