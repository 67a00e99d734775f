"""Benchmark 6, scale: the queues on a large PostgreSQL database against an empty one, in the same run.

The large database is grown with SQL (``bench/grow.py``): 1,000,000 inbound messages with their turns and
outbound replies in the quick run, 5,000,000 in the full run (25 per conversation). The baseline is a database
with only the conversations the backlog needs. For both, and for planner statistics taken before the backlog
(ANALYZE saw no pending row: an idle deployment) and during it (ANALYZE saw the backlog):

- inbound drain: a backlog of 1,000 pending messages on 1,000 conversations, drained by 4 threads running the
  worker's database cycle (claim, pending messages, history, commit of a turn with one reply, release) — no AI, so
  the figure is the queue's own cost. Target ≥ 0.9× the empty database.
- outbound drain: the 1,000 replies this wrote, claimed 32 at a time and marked sent. Target ≥ 0.9×.
- idle claim: the time of one claim that finds nothing (each idle worker runs it 5 times a second).

Not measured here yet (issue 17): webhook ack latency during the backlog, reply latency, PostgreSQL CPU with idle
workers, prune throughput.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from bench.harness import Context, standalone
from bench.results import Row, Target

NAME = "scale"
TITLE = "queues on a large database vs an empty one"
ORDER = 60

BACKLOG = 1_000
WORKERS = 4
PER_CONVERSATION = 25
TARGET_RATIO = 0.9


def run(ctx: Context) -> list[Row]:
    from bench.databases import postgres_database
    from bench.grow import grow
    from chatops.db.connect import create_db_engine
    from chatops.db.migrate import migrate

    messages = ctx.pick(5_000_000, 1_000_000)
    with postgres_database(ctx.database_server) as empty_url, postgres_database(ctx.database_server) as large_url:
        engines = {
            name: create_db_engine(url, pool_size=WORKERS + 1)
            for name, url in (("empty", empty_url), ("large", large_url))
        }
        try:
            for engine in engines.values():
                migrate(engine)
            with engines["empty"].begin() as connection:
                grow(connection, messages=0, conversations=BACKLOG)
            ctx.log(f"scale: growing the large database to {messages:,} messages")
            started = time.monotonic()
            with engines["large"].begin() as connection:
                grow(connection, messages=messages, conversations=messages // PER_CONVERSATION)
            grown_in = time.monotonic() - started
            for engine in engines.values():  # what autovacuum would do after a bulk load, before measuring
                with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                    connection.exec_driver_sql("VACUUM ANALYZE")
            size = _size(engines["large"])
            ctx.log(f"scale: grown in {grown_in:.0f} s ({size})")
            return _measure(ctx, engines, messages=messages, note=f"large: {messages:,} messages, {size}")
        finally:
            for engine in engines.values():
                engine.dispose()


def _measure(ctx: Context, engines: dict[str, sa.Engine], *, messages: int, note: str) -> list[Row]:
    from bench.grow import add_backlog, analyze

    rows: list[Row] = []
    for statistics in ("before", "during"):
        results: dict[str, dict[str, float]] = {}
        order = list(engines.items()) if statistics == "before" else list(reversed(engines.items()))
        for name, engine in order:  # alternate who goes first: neither side always gets the warmer cache
            with engine.begin() as connection:
                if statistics == "before":
                    analyze(connection)
                add_backlog(connection, inbound=BACKLOG, conversations=BACKLOG, tag=f"{statistics}")
                if statistics == "during":
                    analyze(connection)
            inbound = _timed(lambda engine=engine: _drain_inbound(engine))
            outbound = _timed(lambda engine=engine: _drain_outbound(engine))
            idle = _idle_claim(engine)
            results[name] = {"inbound": BACKLOG / inbound, "outbound": BACKLOG / outbound, "idle": idle}
            ctx.log(f"scale: {name}, statistics {statistics} the backlog: {results[name]}")
        label = f"statistics taken {statistics} the backlog"
        for queue, title in (("inbound", "inbound drain"), ("outbound", "outbound drain")):
            rows.append(
                Row(
                    NAME,
                    f"{title}, {BACKLOG:,} backlog, {label}: msg/s",
                    value=results["large"][queue],
                    unit="msg/s",
                    baseline=results["empty"][queue],
                    baseline_label="empty database",
                    target=Target(">=", TARGET_RATIO),
                    note=note,
                )
            )
        rows.append(
            Row(
                NAME,
                f"idle claim (nothing due), {label}",
                value=results["large"]["idle"] * 1000,
                unit="ms",
                baseline=results["empty"]["idle"] * 1000,
                baseline_label="empty database",
                note="median of 200 claims",
            )
        )
    return rows


def _timed(action: Callable[[], None]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _drain_inbound(engine: sa.Engine) -> None:
    """4 threads run the worker's database cycle until nothing is due."""
    from chatops.channels.events import OutboundMessage
    from chatops.db.inbox import (
        TurnRecord,
        claim_conversation,
        complete_turn,
        pending_messages,
        recent_turns,
        release_conversation,
    )

    lease = timedelta(minutes=5)
    reply = OutboundMessage(text="It ships tomorrow.")

    def work(name: str) -> None:
        while True:
            now = datetime.now(UTC)
            conversation = claim_conversation(engine, worker_id=name, now=now, lease=lease)
            if conversation is None:
                return
            pending = pending_messages(engine, conversation)
            recent_turns(engine, conversation.id, limit=10)
            record = TurnRecord(
                started_at=now,
                finished_at=datetime.now(UTC),
                stage_before="triage",
                stage_after="triage",
                user_text=pending[0].message.text if pending else None,
                replies=[reply.to_json()],
            )
            complete_turn(
                engine,
                conversation,
                worker_id=name,
                now=now,
                lease=lease,
                answered=[p.id for p in pending],
                turn=record,
                replies=(reply,),
            )
            release_conversation(engine, conversation, worker_id=name)

    threads = [threading.Thread(target=work, args=(f"bench:{index}",)) for index in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _drain_outbound(engine: sa.Engine) -> None:
    """Claim 32 due rows at a time and mark them sent, until nothing is due."""
    from chatops.db.outbox import claim_outbound, mark_sent

    while True:
        now = datetime.now(UTC)
        rows = claim_outbound(engine, now=now, limit=32)
        if not rows:
            return
        for row in rows:
            mark_sent(engine, row.id, provider_message_id=f"wamid.bench.{row.id}", now=now)


def _idle_claim(engine: sa.Engine) -> float:
    from chatops.db.inbox import claim_conversation

    times = []
    for _ in range(200):
        started = time.perf_counter()
        claim_conversation(engine, worker_id="bench:idle", now=datetime.now(UTC), lease=timedelta(seconds=1))
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def _size(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar())


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
