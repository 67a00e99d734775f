"""Retention: clear raw payloads and turn traces, delete old messages — in small batches, never a long lock.

Three horizons (``CHATOPS_RETAIN_*_DAYS``, docs/scaling.md): raw webhook payloads (``inbound_messages.raw``),
turn traces (the variables, prompt, parameters, AI response, memory before/after and extraction of ``turns``: what
replay reads), and messages (inbound and outbound rows, turns, then conversations idle since). A horizon of ``None``
keeps that data for ever. Work waiting in a queue (pending inbound, unsent outbound) is never touched.

Each table is walked in primary-key order, ``batch_size`` rows per short transaction; ids grow with time, so the
walk stops at the first batch past the horizon. Clearing is an UPDATE of columns in no index, deleting is a DELETE
by key: no table rewrite, no lock held longer than one batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from chatops.db.connect import storage_errors
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns

# What `chatops prune` uses unless told otherwise: small batches with a pause as long as each batch, so a prune
# running beside live traffic costs the webhooks little (measured in docs/scaling.md).
DEFAULT_BATCH_SIZE = 200
DEFAULT_PAUSE_RATIO = 1.0


@dataclass(frozen=True)
class RetentionPolicy:
    """How many days to keep each kind of data; ``None`` keeps it for ever."""

    raw_days: float | None = None
    traces_days: float | None = None
    messages_days: float | None = None


@dataclass
class PruneReport:
    """What one run removed (or, with ``dry_run``, would remove), per kind of data."""

    dry_run: bool
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, count: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + count


# What clearing a turn's trace writes: everything replay re-runs a turn from, i.e. the personal data it captured.
_TRACE_CLEARED: dict[str, Any] = {
    "variables": {},
    "prompt": sa.null(),  # SQL NULL: None in a JSON column would store a JSON null, which IS NOT NULL
    "parameters": sa.null(),
    "ai_response": None,
    "state_before": {},
    "state_after": {},
    "extraction": sa.null(),
}


def prune(
    engine: sa.Engine,
    policy: RetentionPolicy,
    *,
    now: datetime,
    batch_size: int = DEFAULT_BATCH_SIZE,
    pause_ratio: float = 0.0,
    dry_run: bool = False,
    sleep: Callable[[float], object] = time.sleep,
) -> PruneReport:
    """Apply ``policy`` as of ``now``; returns the counts. Raises StorageError when the database fails.

    After each batch that changed rows, waits ``pause_ratio`` times as long as the batch took (``sleep``), so the
    prune takes at most ``1 / (1 + pause_ratio)`` of the time of one database connection and leaves the rest of the
    database's CPU and WAL bandwidth to the webhooks and workers running meanwhile.
    """
    report = PruneReport(dry_run=dry_run)
    m, o, t = inbound_messages.c, outbound_messages.c, turns.c
    walk = _Walker(engine, batch_size=batch_size, dry_run=dry_run, pause_ratio=pause_ratio, sleep=sleep)
    if policy.messages_days is not None:
        cutoff = now - timedelta(days=policy.messages_days)
        report.add(
            "outbound_deleted", walk.delete(outbound_messages, o.created_at, cutoff, o.next_attempt_at.is_(None))
        )
        report.add("inbound_deleted", walk.delete(inbound_messages, m.received_at, cutoff, m.status != "pending"))
        report.add("turns_deleted", walk.delete(turns, t.started_at, cutoff, sa.true()))
        report.add("conversations_deleted", walk.delete_idle_conversations(cutoff, now=now))
    if policy.traces_days is not None:
        cutoff = now - timedelta(days=policy.traces_days)
        traced = sa.or_(
            t.prompt.is_not(None),
            t.ai_response.is_not(None),
            sa.literal_column("turns.variables") != sa.literal_column("'{}'"),
        )
        report.add("traces_cleared", walk.update(turns, t.started_at, cutoff, traced, _TRACE_CLEARED))
    if policy.raw_days is not None:
        cutoff = now - timedelta(days=policy.raw_days)
        raw = sa.literal_column("inbound_messages.raw") != sa.literal_column("'{}'")
        report.add("raw_cleared", walk.update(inbound_messages, m.received_at, cutoff, raw, {"raw": {}}))
    return report


class _Walker:
    """Walks a table in id order, one short transaction per batch, up to the first row past a horizon."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        batch_size: int,
        dry_run: bool,
        pause_ratio: float = 0.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.engine = engine
        self.batch_size = max(batch_size, 1)
        self.dry_run = dry_run
        self.pause_ratio = max(pause_ratio, 0.0)
        self.sleep = sleep

    def delete(
        self, table: sa.Table, column: sa.ColumnElement[Any], cutoff: datetime, keep_out: sa.ColumnElement[bool]
    ) -> int:
        return self._walk(table, column, cutoff, keep_out, lambda ids: sa.delete(table).where(table.c.id.in_(ids)))

    def update(
        self,
        table: sa.Table,
        column: sa.ColumnElement[Any],
        cutoff: datetime,
        condition: sa.ColumnElement[bool],
        values: dict[str, Any],
    ) -> int:
        return self._walk(
            table, column, cutoff, condition, lambda ids: sa.update(table).where(table.c.id.in_(ids)).values(**values)
        )

    def delete_idle_conversations(self, cutoff: datetime, *, now: datetime) -> int:
        """Conversations with no message since ``cutoff``, nothing waiting and no live lease."""
        c, m, o = conversations.c, inbound_messages.c, outbound_messages.c
        idle = sa.and_(
            sa.func.coalesce(c.last_inbound_at, c.updated_at) < cutoff,
            c.updated_at < cutoff,
            sa.or_(c.locked_until.is_(None), c.locked_until < now),
            ~sa.exists().where(m.conversation_id == c.id, m.status == "pending"),
            ~sa.exists().where(o.conversation_id == c.id, o.next_attempt_at.is_not(None)),
        )
        # Conversation ids do not follow time: walk them all (there are far fewer of them than messages).
        return self._walk(conversations, None, cutoff, idle, lambda ids: sa.delete(conversations).where(c.id.in_(ids)))

    def _walk(
        self,
        table: sa.Table,
        column: sa.ColumnElement[Any] | None,
        cutoff: datetime,
        condition: sa.ColumnElement[bool],
        change: Callable[[list[int]], sa.Executable],
    ) -> int:
        done, last = 0, 0
        while True:
            started = time.monotonic()
            with storage_errors(self.engine), self.engine.begin() as connection:
                window = sa.select(table.c.id).where(table.c.id > last).order_by(table.c.id).limit(self.batch_size)
                ids = list(connection.execute(window).scalars())
                if not ids:
                    return done
                last = ids[-1]
                chosen = sa.select(table.c.id).where(table.c.id.in_(ids), condition)
                if column is not None:
                    chosen = chosen.where(column < cutoff)
                matching = list(connection.execute(chosen).scalars())
                if matching and not self.dry_run:
                    connection.execute(change(matching))
                done += len(matching)
                newest = None
                if column is not None:
                    newest = connection.execute(sa.select(sa.func.max(column)).where(table.c.id.in_(ids))).scalar()
            if matching and not self.dry_run and self.pause_ratio:
                self.sleep((time.monotonic() - started) * self.pause_ratio)
            if newest is not None and newest >= cutoff:
                return done  # ids grow with time: everything after this batch is younger
