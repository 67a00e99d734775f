"""The queues cost the backlog, never the table: plans on a grown PostgreSQL database, HOT delivery reports, watermarks.

The claim queries are captured as the worker and the sender send them, then EXPLAINed with planner statistics taken
before a backlog (ANALYZE saw no pending rows: the NOT EXISTS used to become a nested loop quadratic in the backlog)
and during it (ANALYZE saw pending rows: the claim used to walk the primary key of the whole table).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from bench.grow import add_backlog, analyze, grow
from chatops.channels.events import StatusUpdate
from chatops.db.connect import create_db_engine
from chatops.db.inbox import claim_conversation
from chatops.db.migrate import migrate
from chatops.db.outbox import apply_status, claim_outbound, mark_sent
from chatops.db.tables import conversations, outbound_messages
from tests.databases import postgres_database

pytestmark = pytest.mark.postgres

MESSAGES = 40_000  # a few seconds to build; the plans below are those of a table of any size
CONVERSATIONS = 4_000
BACKLOG = 1_000


@pytest.fixture(scope="module")
def grown() -> Iterator[sa.Engine]:
    with postgres_database() as url:
        engine = create_db_engine(url)
        migrate(engine)
        with engine.begin() as connection:
            grow(connection, messages=MESSAGES, conversations=CONVERSATIONS)
        yield engine
        engine.dispose()


def captured_claims(engine: sa.Engine) -> list[list[tuple[str, Any]]]:
    """Run the worker's and the sender's claims; for each, the statements of its transaction that plan or read."""
    now = datetime.now(UTC)
    return [
        statements_of(engine, lambda: claim_conversation(engine, worker_id="t", now=now, lease=timedelta(seconds=1))),
        statements_of(engine, lambda: claim_outbound(engine, now=now, limit=32, channels=["whatsapp"])),
    ]


def statements_of(engine: sa.Engine, action: Callable[[], object]) -> list[tuple[str, Any]]:
    seen: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().startswith(("WITH", "SET", "SELECT")):
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        action()
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)
    assert seen, "the claim sent nothing"
    assert seen[0][0].startswith("SET"), seen  # the claim's planner settings come first
    return seen


def plan(engine: sa.Engine, statements: list[tuple[str, Any]], *, analyze: bool = False) -> str:
    """EXPLAIN (ANALYZE) each read of a claim, in a transaction that first runs the claim's planner settings."""
    explain = "EXPLAIN (ANALYZE)" if analyze else "EXPLAIN"
    plans = []
    with engine.begin() as connection:
        for statement, parameters in statements:
            if statement.startswith("SET"):
                connection.exec_driver_sql(statement, parameters)
            else:
                rows = connection.exec_driver_sql(f"{explain} {statement}", parameters).all()
                plans.append("\n".join(row[0] for row in rows))
        connection.rollback()  # EXPLAIN ANALYZE ran the claim: its row locks go
    return "\n".join(plans)


def busiest_node(text: str) -> tuple[int, str]:
    """The plan node of an EXPLAIN ANALYZE that handled the most rows (returned plus filtered out, over all loops)."""
    busiest = (0, "")
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = re.search(r"actual time=\S+ rows=(\d+) loops=(\d+)", line)
        if match is None:
            continue
        rows, loops = int(match[1]), int(match[2])
        for detail in lines[number + 1 :]:
            if "actual time=" in detail:
                break
            removed = re.search(r"Rows Removed by (?:Join )?Filter: (\d+)", detail)
            rows += int(removed[1]) if removed else 0
        busiest = max(busiest, (rows * loops, line.strip()))
    return busiest


# The backend's own counters, not yet sent to the statistics collector: exact for this connection.
def rows_read(connection: sa.Connection) -> int:
    sql = (
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables"
        " WHERE relname = 'outbound_messages'"
    )
    return int(connection.execute(sa.text(sql)).scalar_one())


def hot_updates(connection: sa.Connection) -> int:
    sql = "SELECT pg_stat_get_xact_tuples_hot_updated('outbound_messages'::regclass)"
    return int(connection.execute(sa.text(sql)).scalar_one())


def assert_reads_only_the_queue(text: str, *, table: str, index: str) -> None:
    """The plan reads the partial index, and the table only by key: no scan, no walk of the primary key."""
    assert index in text, text
    assert f"Seq Scan on {table}" not in text, text
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if f"Scan using pk_{table} on {table}" in line:
            assert "Index Cond: (id = " in lines[number + 1], text


def test_claims_use_the_partial_indexes_with_statistics_before_and_during_a_backlog(grown: sa.Engine) -> None:
    with grown.begin() as connection:
        analyze(connection)  # statistics of an idle deployment: no pending row anywhere
        add_backlog(connection, inbound=BACKLOG, outbound=BACKLOG, conversations=CONVERSATIONS, tag="before")
    for moment in ("statistics taken before the backlog", "statistics taken during the backlog"):
        inbound, outbound = captured_claims(grown)
        (
            assert_reads_only_the_queue(
                plan(grown, inbound), table="inbound_messages", index="ix_inbound_messages_pending"
            ),
            moment,
        )
        (
            assert_reads_only_the_queue(
                plan(grown, outbound), table="outbound_messages", index="ix_outbound_messages_unsent"
            ),
            moment,
        )
        with grown.begin() as connection:
            analyze(connection)


def test_claims_handle_each_queued_row_a_few_times_with_statistics_before_and_during_a_backlog(
    grown: sa.Engine,
) -> None:
    """No plan node does work per pair of queued rows: with statistics taken before a backlog (one head expected)
    the sender's claim once nested a rescan of the heads inside its scan of the queue, 1.8 s at 2,000 rows."""
    with grown.begin() as connection:
        connection.execute(sa.delete(outbound_messages).where(outbound_messages.c.next_attempt_at.is_not(None)))
        analyze(connection)  # statistics of an idle deployment: no unsent row
        add_backlog(connection, outbound=BACKLOG, conversations=CONVERSATIONS)
    for moment in ("statistics taken before the backlog", "statistics taken during the backlog"):
        for claim in captured_claims(grown):
            work, node = busiest_node(plan(grown, claim, analyze=True))
            assert work <= 3 * BACKLOG, f"{moment}: {node} handled {work:,} rows for a backlog of {BACKLOG:,}"
        with grown.begin() as connection:
            analyze(connection)


def test_a_messenger_watermark_reads_the_unread_tail_not_the_history(grown: sa.Engine) -> None:
    now = datetime.now(UTC)
    with grown.begin() as connection:
        conversation_id = connection.execute(
            conversations.insert()
            .values(
                channel="messenger",
                account_id="PAGE",
                user_id="PSID",
                state={},
                mode="bot",
                turn_count=0,
                created_at=now,
                updated_at=now,
            )
            .returning(conversations.c.id)
        ).scalar_one()
        history = [
            {
                "conversation_id": conversation_id,
                "body": {"kind": "text", "text": "old"},
                "status": "read",
                "attempts": 1,
                "next_attempt_at": None,
                "created_at": now,
                "updated_at": now,
                "sent_at": now - timedelta(days=30) + timedelta(seconds=i),
            }
            for i in range(3_000)
        ]
        connection.execute(outbound_messages.insert(), history)
        unread = [dict(history[0], status="sent", sent_at=now - timedelta(minutes=3 - i)) for i in range(3)]
        connection.execute(outbound_messages.insert(), unread)
        analyze(connection)
    with grown.begin() as connection:
        before = rows_read(connection)
        changed = apply_status(
            connection,
            StatusUpdate("messenger", "PAGE", "PSID", "read", now, watermark=now - timedelta(seconds=90)),
            now=now,
        )
        touched = rows_read(connection) - before
    assert changed
    assert touched < 50, f"the watermark read {touched} outbound rows"
    with grown.connect() as connection:
        statuses = connection.execute(
            sa.select(outbound_messages.c.status, sa.func.count())
            .where(outbound_messages.c.conversation_id == conversation_id)
            .group_by(outbound_messages.c.status)
        ).all()
    assert dict(statuses) == {"read": 3_002, "sent": 1}  # the newest was sent after the watermark


def test_delivery_reports_are_hot_updates(grown: sa.Engine) -> None:
    """A status report changes no indexed column, so PostgreSQL updates the row in place (no index writes)."""
    now = datetime.now(UTC)
    with grown.begin() as connection:
        row_id = connection.execute(
            outbound_messages.insert()
            .values(
                conversation_id=1,
                body={"kind": "text", "text": "hi"},
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
            .returning(outbound_messages.c.id)
        ).scalar_one()
    assert mark_sent(grown, row_id, provider_message_id="wamid.hot", now=now)
    with grown.begin() as connection:
        before = hot_updates(connection)
        for status in ("delivered", "read"):
            update = StatusUpdate(
                "whatsapp", "106540352242922", "15550000001", status, now, provider_message_id="wamid.hot"
            )
            assert apply_status(connection, update, now=now)
        hot = hot_updates(connection) - before
    assert hot == 2
