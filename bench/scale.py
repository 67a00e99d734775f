"""Benchmark 6, scale: the queues on a large PostgreSQL database against an empty one, in the same run.

The large database is grown with SQL (``bench/grow.py``): 1,000,000 inbound messages with their turns and
outbound replies in the quick run, 5,000,000 in the full run (25 per conversation). The baseline is a database
with only the conversations the backlog needs. For both, and for planner statistics taken before the backlog
(ANALYZE saw no pending row: an idle deployment) and during it (ANALYZE saw the backlog):

- inbound drain: a backlog of 500 pending messages on 500 conversations, drained by 4 threads running the
  worker's database cycle (claim, pending messages, history, commit of a turn with one reply, release) — no AI, so
  the figure is the queue's own cost. Target ≥ 0.9× the empty database.
- outbound drain: the 500 replies this wrote, claimed 32 at a time and marked sent (with statistics taken during
  the backlog, ANALYZE runs again once the replies are written). Target ≥ 0.9×.
- idle claim: the time of one claim that finds nothing (each idle worker runs it 5 times a second);
- idle CPU: PostgreSQL's CPU while 4 worker loops and a sender loop poll at ``serve``'s rates and find nothing;
- prune: ``chatops prune`` of a day of the large database's history per round (rows deleted and rows cleared per
  second) while ``chatops serve --no-workers`` acknowledges 100 signed webhooks a second, and the ack p99 during the
  prunes against quiet windows of the same run (target ≤ 2×).

Webhook ack and reply latency on an idle queue are measured by ``bench/wakeups.py``.
"""

from __future__ import annotations

import json
import subprocess
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

BACKLOG = 500
WORKERS = 4
PER_CONVERSATION = 25
TARGET_RATIO = 0.9
IDLE_SECONDS = 10.0
PRUNE_RATE = 100.0  # webhooks per second while the prune runs (and in the quiet windows)
PRUNE_CONNECTIONS = 4
PRUNE_SENDERS = 200
TARGET_PRUNE_P99_RATIO = 2.0


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
            note = f"large: {messages:,} messages, {size}"
            rows = _measure(ctx, engines, messages=messages, note=note)
            return rows + _measure_prune(ctx, engines["large"], large_url, messages=messages, note=note)
        finally:
            for engine in engines.values():
                engine.dispose()


def _measure(ctx: Context, engines: dict[str, sa.Engine], *, messages: int, note: str) -> list[Row]:
    rounds = ctx.rounds(5, 3)
    rows: list[Row] = []
    for statistics in ("before", "during"):
        figures: dict[str, dict[str, list[float]]] = {name: {} for name in engines}

        for index in range(rounds):  # alternate who goes first: neither side always gets the warmer cache
            order = list(engines.items()) if index % 2 == 0 else list(reversed(engines.items()))
            for name, engine in order:
                _measure_once(ctx, engine, figures[name], statistics=statistics, tag=f"{statistics}{index}")
            ctx.log(f"scale: statistics {statistics} the backlog, round {index + 1}/{rounds}: {figures}")

        label = f"statistics taken {statistics} the backlog"
        how = f"median of {rounds} interleaved rounds; {note}"
        for queue, title in (("inbound", "inbound drain (worker cycle)"), ("outbound", "outbound drain (sender)")):
            value, baseline = _pair(figures, queue)
            rows.append(
                Row(
                    NAME,
                    f"{title}, {BACKLOG:,} backlog, {label}: msg/s",
                    value=value,
                    unit="msg/s",
                    baseline=baseline,
                    baseline_label="empty database",
                    target=Target(">=", TARGET_RATIO),
                    note=how,
                )
            )
        for key, title in (("inbound_claim", "worker's claim"), ("outbound_claim", "sender's claim (32 rows)")):
            value, baseline = _pair(figures, key, 1000)
            rows.append(
                Row(
                    NAME,
                    f"{title} during the drain, {label}: median",
                    value=value,
                    unit="ms",
                    baseline=baseline,
                    baseline_label="empty database",
                    note=how,
                )
            )
        value, baseline = _pair(figures, "idle", 1000)
        rows.append(
            Row(
                NAME,
                f"idle claim (nothing due), {label}",
                value=value,
                unit="ms",
                baseline=baseline,
                baseline_label="empty database",
                note="median of 200 claims per round",
            )
        )
        value, baseline = _pair(figures, "cpu", 100)
        rows.append(
            Row(
                NAME,
                f"PostgreSQL CPU, 4 idle workers + idle sender, {label}: % of one core",
                value=value,
                unit="%",
                baseline=baseline,
                baseline_label="empty database",
                note=f"backends' CPU over {IDLE_SECONDS:g} s; workers claim every 0.2 s, the sender every 0.05 s",
            )
        )
    return rows


def _measure_once(
    ctx: Context, engine: sa.Engine, figures: dict[str, list[float]], *, statistics: str, tag: str
) -> None:
    """One round on one database: add the backlog (ANALYZE before or after it), drain both queues, idle figures."""
    from bench.grow import add_backlog, analyze
    from bench.stats import median

    with engine.begin() as connection:
        if statistics == "before":
            analyze(connection)
        add_backlog(connection, inbound=BACKLOG, conversations=BACKLOG, tag=tag)
        if statistics == "during":
            analyze(connection)
    inbound_claims: list[float] = []
    outbound_claims: list[float] = []
    inbound = _timed(lambda: _drain_inbound(engine, inbound_claims))
    if statistics == "during":  # the drain wrote the replies: the sender's backlog, which ANALYZE now sees
        with engine.begin() as connection:
            analyze(connection)
    outbound = _timed(lambda: _drain_outbound(engine, outbound_claims))
    for key, value in (
        ("inbound", BACKLOG / inbound),
        ("outbound", BACKLOG / outbound),
        ("inbound_claim", median(inbound_claims) or 0.0),
        ("outbound_claim", median(outbound_claims) or 0.0),
        ("idle", _idle_claim(engine)),
        ("cpu", _idle_cpu(ctx, engine)),
    ):
        figures.setdefault(key, []).append(value)


def _pair(figures: dict[str, dict[str, list[float]]], key: str, scale: float = 1.0) -> tuple[float, float]:
    """The medians of ``key`` on the large and the empty database, times ``scale``."""
    from bench.stats import median

    large, empty = median(figures["large"][key]), median(figures["empty"][key])
    return (large or 0.0) * scale, (empty or 0.0) * scale


def _timed(action: Callable[[], None]) -> float:
    started = time.monotonic()
    action()
    return time.monotonic() - started


def _drain_inbound(engine: sa.Engine, claims: list[float]) -> None:
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
            started = time.perf_counter()
            conversation = claim_conversation(engine, worker_id=name, now=now, lease=lease)
            claims.append(time.perf_counter() - started)  # list.append is atomic under the GIL
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


def _drain_outbound(engine: sa.Engine, claims: list[float]) -> None:
    """Claim 32 due rows at a time and mark them sent, until nothing is due."""
    from chatops.db.outbox import claim_outbound, mark_sent

    while True:
        now = datetime.now(UTC)
        started = time.perf_counter()
        rows = claim_outbound(engine, now=now, limit=32)
        claims.append(time.perf_counter() - started)
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


def _idle_cpu(ctx: Context, engine: sa.Engine) -> float:
    """PostgreSQL CPU seconds per second while 4 worker loops and a sender loop find nothing to do (serve's rates)."""
    from bench.cpu import PostgresBackends, cpu_between
    from chatops.db.inbox import claim_conversation
    from chatops.db.outbox import claim_outbound

    stop = threading.Event()

    def worker() -> None:
        while not stop.wait(0.2):
            claim_conversation(engine, worker_id="bench:idle", now=datetime.now(UTC), lease=timedelta(seconds=1))

    def sender() -> None:
        while not stop.wait(0.05):
            claim_outbound(engine, now=datetime.now(UTC), limit=32)

    backends = PostgresBackends(ctx.database_server, str(engine.url.database))
    threads = [threading.Thread(target=worker) for _ in range(WORKERS)] + [threading.Thread(target=sender)]
    try:
        for thread in threads:
            thread.start()
        time.sleep(1.0)  # every thread has its pooled connection
        before = backends.snapshot()
        time.sleep(IDLE_SECONDS)
        after = backends.snapshot()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        backends.close()
    if before is None or after is None:
        return float("nan")
    return cpu_between(before, after) / IDLE_SECONDS


def _measure_prune(
    ctx: Context,
    engine: sa.Engine,
    url: str,
    *,
    messages: int,
    note: str,
    rounds: int | None = None,
    warm_up: float = 3.0,
    options: tuple[str, ...] = (),
) -> list[Row]:
    """``chatops prune`` of a day's data per round while ``serve`` acknowledges webhooks at a steady rate.

    Each round prunes the next day of the grown history (``grow`` spreads it over 60 days) as a daily timer would
    in a steady state: one ``chatops prune`` deletes the oldest day's messages, replies and turns, then one clears
    the traces of the next day's turns and the raw payloads of the day after (two processes, so deleting and
    clearing are timed apart; the ack latency counts both). Rounds alternate with quiet windows as long as the
    last prune, the webhook load running throughout; every acknowledged webhook must be stored. ``rounds`` and
    ``warm_up`` (seconds of load before the first window) are for tests/test_bench.py; ``options`` go to
    ``chatops prune`` (none: its defaults, what a timer runs).
    """
    from bench.bots import write_echo_bot
    from bench.databases import RowCounter
    from bench.load import SteadyLoad
    from bench.payloads import WEBHOOK_PATH, SignedBody, sender_id, sign, text_webhook
    from bench.serving import chatops_server
    from bench.stats import median, percentile
    from tests.fakes.graph_api import FakeGraphAPI

    rounds = rounds or ctx.rounds(3, 3)
    day = messages // 60
    run_id = f"prune{time.monotonic_ns()}"
    stamp = int(time.time())

    def body(n: int) -> SignedBody:
        raw = text_webhook(
            wamid=f"wamid.BENCH{run_id}.{n:08d}", sender=sender_id(n % PRUNE_SENDERS), text=f"Hi #{n}", timestamp=stamp
        )
        return SignedBody(raw, sign(raw))

    windows: dict[str, list[tuple[float, float]]] = {"quiet": [], "prune": []}
    rates: dict[str, list[float]] = {"deleted": [], "cleared": []}
    counts: dict[str, int] = {}
    stages = write_echo_bot(ctx.work_dir / "scale-prune-bot", ai=False)
    with FakeGraphAPI() as graph:
        server = chatops_server(
            ctx,
            options=["--no-workers"],
            database_url=url,
            stages=stages,
            graph_api_url=graph.graph_api_url,
            log_name="serve_scale_prune",
        )
        with server:
            load = SteadyLoad(
                port=server.port, path=WEBHOOK_PATH, make_body=body, rate=PRUNE_RATE, connections=PRUNE_CONNECTIONS
            )
            with load:
                time.sleep(warm_up)  # the server's pool and prepared statements are warm
                last = 0.0
                for index in range(rounds):  # prune first in even rounds, the quiet window first in odd ones
                    for step in ("prune", "quiet") if index % 2 == 0 else ("quiet", "prune"):
                        started = time.monotonic()
                        if step == "prune":
                            for kind, seconds, changed in _prune_day(
                                ctx, engine, url, day=day, index=index, options=options
                            ):
                                rates[kind].append(sum(changed.values()) / seconds)
                                for key, value in changed.items():
                                    counts[key] = counts.get(key, 0) + value
                            last = time.monotonic() - started
                        else:
                            time.sleep(last or 10.0)
                        windows[step].append((started, time.monotonic()))
                    ctx.log(f"scale: prune round {index + 1}/{rounds}: {last:.1f} s, {rates}")
            counter = RowCounter(url)
            try:
                stored = counter.settle("inbound_messages", where=f"provider_message_id LIKE 'wamid.BENCH{run_id}.%'")
            finally:
                counter.close()

    acks = {step: [a for start, end in spans for a in load.between(start, end)] for step, spans in windows.items()}
    ok = sum(1 for a in load.acks if a.status == 200)
    problems = [f"{len(load.acks) - ok} webhooks not acknowledged with 200"] if ok < len(load.acks) else []
    if stored != ok:
        problems.append(f"{ok} acknowledged, {stored} stored")
    invalid = "; ".join(problems) or None
    latency = {step: [a.ms for a in values if a.status == 200] for step, values in acks.items()}
    deleted = sum(v for k, v in counts.items() if k.endswith("_deleted"))
    cleared = sum(v for k, v in counts.items() if k.endswith("_cleared"))
    how = f"{rounds} rounds, a day of the history each ({day:,} messages); `chatops prune` processes, start-up included"
    load_note = f"{PRUNE_RATE:g} webhooks/s over {PRUNE_CONNECTIONS} connections to serve --no-workers"
    return [
        Row(
            NAME,
            f"prune with {load_note}: rows deleted per second",
            value=median(rates["deleted"]),
            unit="rows/s",
            note=f"median; {deleted:,} rows deleted ({_breakdown(counts, '_deleted')}); {how}; {note}",
            invalid=invalid,
        ),
        Row(
            NAME,
            f"prune with {load_note}: rows cleared per second",
            value=median(rates["cleared"]),
            unit="rows/s",
            note=f"median; {cleared:,} rows cleared ({_breakdown(counts, '_cleared')}); {how}",
            invalid=invalid,
        ),
        Row(
            NAME,
            f"webhook ack latency during the prune, {load_note}: p99",
            value=percentile(latency["prune"], 99),
            unit="ms",
            baseline=percentile(latency["quiet"], 99),
            baseline_label="no prune (quiet windows, same run)",
            target=Target("<=", TARGET_PRUNE_P99_RATIO),
            note=(
                f"p50 {_ms(percentile(latency['prune'], 50))} vs {_ms(percentile(latency['quiet'], 50))}; "
                f"{len(latency['prune']):,} vs {len(latency['quiet']):,} webhooks, windows alternating"
            ),
            invalid=invalid,
        ),
    ]


def _prune_day(
    ctx: Context, engine: sa.Engine, url: str, *, day: int, index: int, options: tuple[str, ...] = ()
) -> list[tuple[str, float, dict[str, int]]]:
    """Round ``index``'s two ``chatops prune`` runs: (``deleted``/``cleared``, seconds, counts) for each."""
    oldest = _days_ago(engine, day * (index + 1))
    runs = [
        ("deleted", {"MESSAGES": oldest, "TRACES": "never", "RAW": "never"}),
        (
            "cleared",
            {
                "MESSAGES": "never",
                "TRACES": _days_ago(engine, day * (index + 2)),
                "RAW": _days_ago(engine, day * (index + 3)),
            },
        ),
    ]
    done = []
    for kind, horizons in runs:
        env = ctx.env({f"CHATOPS_RETAIN_{name}_DAYS": value for name, value in horizons.items()})
        started = time.monotonic()
        finished = subprocess.run(
            [*ctx.chatops, "--database-url", url, "prune", "--json", *options],
            env=env,
            cwd=ctx.work_dir,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        seconds = time.monotonic() - started
        if finished.returncode != 0:
            raise RuntimeError(f"chatops prune failed ({finished.returncode}): {finished.stderr[-800:]}")
        done.append((kind, seconds, {k: int(v) for k, v in json.loads(finished.stdout)["counts"].items()}))
    return done


def _days_ago(engine: sa.Engine, message: int) -> str:
    """A retention horizon (days, as the setting takes it) that falls just after grown message number ``message``."""
    with engine.connect() as connection:
        received = connection.execute(
            sa.text(
                "SELECT received_at FROM inbound_messages WHERE channel = 'whatsapp' AND provider_message_id = :id"
            ),
            {"id": f"wamid.in.{message}"},
        ).scalar_one()
    return f"{(datetime.now(UTC) - received).total_seconds() / 86400:.9f}"


def _breakdown(counts: dict[str, int], suffix: str) -> str:
    parts = [f"{key.removesuffix(suffix)} {value:,}" for key, value in counts.items() if key.endswith(suffix)]
    return ", ".join(parts)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


def _size(engine: sa.Engine) -> str:
    with engine.connect() as connection:
        return str(connection.execute(sa.text("SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar())


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
