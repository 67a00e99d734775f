"""Checks against the database: reachable, schema at head, connection budget, clock skew, and what the queues say
about the workers and the sender.

Workers leave no row of their own (no per-process heartbeat table): whether they run is read from their traces.
A turn finished recently, or a conversation lease held now (renewed every ``CHATOPS_LEASE_SECONDS / 4`` while a
turn runs), shows a worker at work; inbound messages due for longer than :func:`stalled_after` with neither shows
none. With nothing waiting and no recent turn the workers are idle or absent, and the database cannot tell which:
the check passes and says so (docs/operations.md, "chatops doctor").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from chatops.config.settings import Settings
from chatops.doctor import Check
from chatops.errors import ChatopsError

if TYPE_CHECKING:
    from chatops.db.queue_stats import QueueDepth

# What one `chatops serve` with its default options may open: a pool of threads + workers + 4, as much overflow, and
# the two its workers keep outside the pool (the wake-up listener, the instance lock: docs/scaling.md).
SERVE_CONNECTIONS = 2 * (8 + 4 + 4) + 2
SKEW_WARN_SECONDS = 1.0
SKEW_FAIL_SECONDS = 5.0
OUTBOUND_WARN_SECONDS = 60.0
OUTBOUND_FAIL_SECONDS = 600.0


def stalled_after(settings: Settings) -> float:
    """Seconds a due message may wait before the doctor calls its workers missing (leases run out sooner)."""
    return max(60.0, 3 * settings.lease_seconds)


def database_checks(settings: Settings, *, now: Callable[[], datetime]) -> Iterator[Check]:
    """Connect; stop there when that fails (every later check needs it)."""
    from chatops.config.settings import mask_url
    from chatops.db.connect import check_connection, create_db_engine, describe_database, parse_database_url

    try:
        parsed = parse_database_url(settings.database_url)
    except ChatopsError as exc:
        yield Check("database", "fail", exc.message, exc.hint)
        return
    path = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and path not in ("", ":memory:") and not Path(path).exists():
        # Connecting would create an empty file: the doctor only reads.
        yield Check("database", "fail", f"SQLite file {path} does not exist", "`chatops migrate` creates it")
        return
    try:
        engine = create_db_engine(settings.database_url, pool_size=1)
        check_connection(engine)
    except ChatopsError as exc:
        yield Check("database", "fail", exc.message, exc.hint or f"is {mask_url(settings.database_url)} right?")
        return
    try:
        yield Check("database", "pass", f"{describe_database(engine)} answers")
        migrated = _migration_check(engine)
        yield migrated
        yield _connections_check(engine)
        yield _clock_check(engine)
        if migrated.status == "pass":  # the queue tables are what this code expects
            yield from _queue_checks(engine, settings, now=now())
    except sa.exc.SQLAlchemyError as exc:
        yield Check("database", "fail", f"a query failed: {type(exc).__name__}", "see the server's log")
    finally:
        engine.dispose()


def _migration_check(engine: sa.Engine) -> Check:
    from chatops.db.migrate import migration_status

    state = migration_status(engine)
    if state.up_to_date:
        return Check("schema", "pass", f"at head ({state.head})")
    return Check(
        "schema",
        "fail",
        f"at {state.current or '(empty)'}, {len(state.pending)} migration(s) behind {state.head}",
        "run `chatops migrate` (back up first: docs/backups.md)",
    )


def _connections_check(engine: sa.Engine) -> Check:
    """PostgreSQL: room left under max_connections for one more ``chatops serve``; SQLite has no such limit."""
    if engine.dialect.name != "postgresql":
        return Check("connections", "pass", "SQLite: no connection limit")
    with engine.connect() as connection:
        limit = int(connection.execute(sa.text("SHOW max_connections")).scalar_one())
        reserved = int(connection.execute(sa.text("SHOW superuser_reserved_connections")).scalar_one())
        used = int(connection.execute(sa.text("SELECT count(*) FROM pg_stat_activity")).scalar_one())
    free = limit - reserved - used
    detail = f"max_connections {limit} ({reserved} reserved), {used} in use, {free} free"
    if free < SERVE_CONNECTIONS:
        return Check(
            "connections",
            "warn",
            f"{detail}; one `chatops serve` may open up to {SERVE_CONNECTIONS}",
            "raise max_connections, lower --threads/--workers, or pool with pgbouncer (docs/scaling.md)",
        )
    return Check("connections", "pass", f"{detail}; one `chatops serve` may open up to {SERVE_CONNECTIONS}")


def _clock_check(engine: sa.Engine) -> Check:
    """Leases compare times written by different machines: this machine's clock against the server's."""
    if engine.dialect.name != "postgresql":
        return Check("clock", "pass", "SQLite: the database is a file on this machine's clock")
    with engine.connect() as connection:
        before = time.time()
        server = connection.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one()
        after = time.time()
    skew = float(server) - (before + after) / 2
    detail = f"this machine is {abs(skew):.2f} s {'behind' if skew > 0 else 'ahead of'} the database server"
    hint = "synchronise both clocks (systemd-timesyncd or chrony): leases and ages compare their times"
    if abs(skew) > SKEW_FAIL_SECONDS:
        return Check("clock", "fail", detail, hint)
    if abs(skew) > SKEW_WARN_SECONDS:
        return Check("clock", "warn", detail, hint)
    return Check("clock", "pass", detail)


def _queue_checks(engine: sa.Engine, settings: Settings, *, now: datetime) -> Iterator[Check]:
    from chatops.db.queue_stats import queue_depths
    from chatops.db.tables import conversations, turns

    depths = queue_depths(engine, now=now)
    with engine.connect() as connection:
        last_turn = connection.execute(sa.select(sa.func.max(turns.c.finished_at))).scalar_one()
        leases = connection.execute(sa.select(sa.func.count()).where(conversations.c.locked_until > now)).scalar_one()
    yield _workers_check(depths, last_turn, int(leases), settings, now=now)
    yield _outbound_check(depths, settings)


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _workers_check(
    depths: list[QueueDepth], last_turn: datetime | None, leases: int, settings: Settings, *, now: datetime
) -> Check:
    inbound = [d for d in depths if d.queue == "inbound"]
    waiting = sum(d.backlog for d in inbound)
    oldest = max((d.oldest_due_seconds for d in inbound), default=0.0)
    since = (now - last_turn.replace(tzinfo=last_turn.tzinfo or UTC)).total_seconds() if last_turn else None
    recent = since is not None and since <= stalled_after(settings)
    activity = f"last turn {_ago(since)} ago" if since is not None else "no turn yet"
    activity += f", {leases} conversation(s) in a turn now"
    if oldest > stalled_after(settings) and not recent and not leases:
        return Check(
            "workers",
            "fail",
            f"{waiting} message(s) waiting, the oldest due for {_ago(oldest)}; {activity}",
            "no worker is taking messages: start `chatops worker` or `chatops serve` (without --no-workers) "
            "and read its log",
        )
    if oldest > stalled_after(settings):
        return Check(
            "workers",
            "warn",
            f"working but behind: {waiting} message(s) waiting, the oldest due for {_ago(oldest)}; {activity}",
            "add workers (--workers, or another `chatops worker`) or find what makes turns slow (turn latency "
            "on /metrics)",
        )
    if waiting or recent or leases:
        return Check("workers", "pass", f"{waiting} message(s) waiting; {activity}")
    return Check("workers", "pass", f"idle: nothing waiting; {activity} (idle or stopped: nothing tells them apart)")


def _outbound_check(depths: list[QueueDepth], settings: Settings) -> Check:
    outbound = [d for d in depths if d.queue == "outbound"]
    backlog = sum(d.backlog for d in outbound)
    oldest = max((d.oldest_due_seconds for d in outbound), default=0.0)
    sending = max((d.oldest_due_seconds for d in depths if d.queue == "sending"), default=0.0)
    detail = f"{backlog} reply(ies) unsent, the oldest due for {_ago(oldest)}"
    hint = "is the sender running (beside the workers)? see its log and chatops_outbound_messages_total on /metrics"
    if oldest > OUTBOUND_FAIL_SECONDS:
        return Check("outbound", "fail", detail, hint)
    if oldest > OUTBOUND_WARN_SECONDS:
        return Check("outbound", "warn", detail, hint)
    if sending > settings.lease_seconds + 30:
        return Check(
            "outbound",
            "warn",
            f"{detail}; a reply has been sending for {_ago(sending)}",
            "a sender died mid-send and nobody took its replies back: start `chatops worker` or `chatops serve`",
        )
    return Check("outbound", "pass", detail)
