"""Benchmark 1, webhook acknowledgement: throughput and latency at 16 and 64 connections, CPU per request.

a. the ceiling: a bare WSGI app on waitress that reads the body and answers 200 (bench/bare_app.py);
b. ``chatops serve --no-workers`` on PostgreSQL: signature, parse, durable write, 200;
c. the same on SQLite;
d. ``chatops serve --server granian --processes 1 --no-workers`` on PostgreSQL (when serve offers granian);
e. the bare app of a on granian: granian's own floor, for reading d (no target).

Every request is a signed WhatsApp webhook with a distinct id (bench.payloads), pre-generated before the run:
text messages at 16 and 64 connections, and at 16 connections a mix of status webhooks (sent, delivered, read,
each on its own outbound message seeded before the run). The servers run side by side and are loaded in turn,
round after round in alternating order; the figures are medians. Every server gets serve's default request
threads.

CPU per acknowledged request (bench.cpu): the CPU time of the server's processes over the run (granian's master
and its web process), plus for b and d the CPU time of the PostgreSQL backends of its pool, divided by the 2xx
answers. Unlike requests per second it hardly depends on what else the machine is doing, so it carries the target
(issue 14): b's and d's totals ≤ 4× a's. The baseline stays the bare app on waitress, as the issue set it; e
shows how much of d's advantage is the server's own.

After each run on b, c or d what it stored is counted: for messages the rows added to ``inbound_messages``, for
statuses the outbound rows moved to delivered/read. Fewer than acknowledged (an acknowledged webhook lost), a
body sent twice, or any non-2xx answer makes the figure invalid.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from bench.harness import Context, standalone
from bench.load import LoadResult
from bench.results import Row, Skip, Target, skipped
from bench.stats import interleave, median
from chatops.cli.serve import DEFAULT_THREADS

NAME = "webhooks"
TITLE = "webhook acknowledgement: throughput, latency, CPU per request"
ORDER = 30

Workload = Literal["messages", "statuses"]
CONNECTIONS = (16, 64)
# (workload, connections) in run order: text messages at both, the status mix at 16.
RUNS: tuple[tuple[Workload, int], ...] = (("messages", 16), ("statuses", 16), ("messages", 64))
TARGET_RATIO_16 = 0.5  # b/a req/s at 16 connections
TARGET_P99_MS = 50.0  # for b at 16 connections, like the ratio
TARGET_P99_RATIO_64 = 2.0  # b/a p99 at 64 connections (issue 14)
TARGET_CPU_RATIO = 4.0  # b's CPU per request (chatops + PostgreSQL) / a's (issue 14)
SERVER_THREADS = DEFAULT_THREADS  # chatops serve's default; the bare app gets the same
SENDERS = 5  # a handful of conversations, like a busy small business
LABELS = {
    "a": "a. bare waitress app",
    "b": "b. serve --no-workers, PostgreSQL",
    "c": "c. serve --no-workers, SQLite",
    "d": "d. serve --server granian --no-workers, PostgreSQL",
    "e": "e. bare app on granian",
}
CANDIDATES = ("b", "c", "d")  # chatops servers; b and d are on PostgreSQL and carry the targets
_run_ids = itertools.count(1)


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds one load run cost: the server process, and (PostgreSQL) its database backends."""

    process: float
    database: float | None
    requests: int  # 2xx answers

    def per_request(self, part: Literal["process", "database", "total"]) -> float | None:
        """Microseconds per acknowledged request; ``None`` for a part that was not measured."""
        if self.requests <= 0:
            return None
        if part == "process":
            return self.process / self.requests * 1e6
        if self.database is None:
            return None
        seconds = self.database if part == "database" else self.process + self.database
        return seconds / self.requests * 1e6


@dataclass
class Target_:
    """One server under load, and what its runs produced (mutable: filled in round by round)."""

    key: str
    label: str
    port: int
    pid: int
    url: str | None = None  # the database of a storing server
    counter: Any = None  # bench.databases.RowCounter for servers that store messages
    backends: Any = None  # bench.cpu.PostgresBackends for servers on PostgreSQL
    results: dict[tuple[Workload, int], list[LoadResult]] = field(default_factory=dict)
    cpu: dict[tuple[Workload, int], list[CpuUse]] = field(default_factory=dict)
    problems: dict[tuple[Workload, int], list[str]] = field(default_factory=dict)
    best_rps: dict[Workload, float] = field(default_factory=dict)


def run(ctx: Context) -> list[Row]:
    from sqlalchemy.engine import make_url

    from bench.bare_app import __name__ as bare_module
    from bench.bots import write_echo_bot
    from bench.cpu import PostgresBackends
    from bench.databases import RowCounter
    from bench.processes import ServerProcess, free_port
    from bench.serving import chatops_server, fresh_database
    from tests.fakes.graph_api import FakeGraphAPI

    duration = ctx.pick(5.0, 2.0)
    rounds = ctx.rounds(4, 1)
    candidates_ready = ctx.has_option("serve", "--no-workers")
    skip_reason = "`chatops serve --no-workers` does not exist yet"
    stages = write_echo_bot(ctx.work_dir / "webhook-bot", ai=False)

    with contextlib.ExitStack() as stack:
        graph = stack.enter_context(FakeGraphAPI())
        bare_port = free_port()
        bare = stack.enter_context(
            ServerProcess(
                [ctx.python, "-m", bare_module, "--port", str(bare_port), "--threads", str(SERVER_THREADS)],
                port=bare_port,
                log=ctx.work_dir / "logs" / "bare_app.log",
                cwd=ctx.root,
                env=ctx.env(),
            )
        )
        targets = [Target_("a", LABELS["a"], bare.port, bare.pid)]
        servers = {"a": bare}
        skips: dict[str, str] = {}
        granian = "granian" in ctx.help_text("serve")
        if granian:
            bare_granian_port = free_port()
            servers["e"] = stack.enter_context(
                ServerProcess(
                    [*_granian_command(ctx), "--port", str(bare_granian_port), f"{bare_module}:app"],
                    port=bare_granian_port,
                    log=ctx.work_dir / "logs" / "bare_app_granian.log",
                    cwd=ctx.root,
                    env=ctx.env(),
                )
            )
            targets.append(Target_("e", LABELS["e"], bare_granian_port, servers["e"].pid))
        else:
            skips["d"] = skips["e"] = "`chatops serve --server granian` does not exist yet"
        for key, backend, options in (
            ("b", "postgresql", []),
            ("c", "sqlite", []),
            ("d", "postgresql", ["--server", "granian", "--processes", "1"]),
        ):
            if key in skips:
                continue
            if not candidates_ready:
                skips[key] = skip_reason
                continue
            try:
                url = stack.enter_context(fresh_database(ctx, backend))
            except Skip as exc:
                skips[key] = str(exc)
                continue
            server = stack.enter_context(
                chatops_server(
                    ctx,
                    options=[*options, "--no-workers", "--threads", str(SERVER_THREADS)],
                    database_url=url,
                    stages=stages,
                    graph_api_url=graph.graph_api_url,
                    log_name=f"serve_no_workers_{key}_{backend}",
                    extra_env={"CHATOPS_AI": "offline"},
                )
            )
            counter = RowCounter(url)
            stack.callback(counter.close)
            target = Target_(key, LABELS[key], server.port, server.pid, url, counter)
            if backend == "postgresql":
                target.backends = PostgresBackends(ctx.database_server, str(make_url(url).database))
                stack.callback(target.backends.close)
            targets.append(target)
            servers[key] = server

        for target in targets:  # warm-up: imports, pools, caches; checked like any run, not reported
            ctx.log(f"webhooks: warm-up {target.label}")
            for workload in ("messages", "statuses"):
                outcome = _measure(ctx, target, workload, connections=CONNECTIONS[0], duration=1.0)
                target.best_rps[workload] = outcome.rps
        for workload, connections in RUNS:
            ctx.log(f"webhooks: {workload}, {connections} connections, {rounds} rounds of {duration:g} s")
            interleave(
                {t.key: _runner(ctx, t, workload, connections=connections, duration=duration) for t in targets},
                rounds=rounds,
            )
        for key, server in servers.items():
            ctx.observations.setdefault("peak_rss_kib", {})[f"webhooks:{key}"] = server.current_rss_peak()
    return _rows(ctx, targets, skips, duration=duration, rounds=rounds)


def _granian_command(ctx: Context) -> list[str]:
    """granian serving a WSGI app (the bare app: e) with serve's request threads, in one web process."""
    threads = str(SERVER_THREADS)
    wsgi = ["--interface", "wsgi", "--workers", "1", "--blocking-threads", threads, "--log-level", "warning"]
    return [ctx.python, "-m", "granian", *wsgi]


def _runner(
    ctx: Context, target: Target_, workload: Workload, *, connections: int, duration: float
) -> Callable[[], LoadResult]:
    def measure() -> LoadResult:
        result = _measure(ctx, target, workload, connections=connections, duration=duration, record=True)
        target.best_rps[workload] = max(target.best_rps.get(workload, 0.0), result.rps)
        return result

    return measure


def _measure(
    ctx: Context, target: Target_, workload: Workload, *, connections: int, duration: float, record: bool = False
) -> LoadResult:
    """One load run on ``target``: its CPU time, and for a storing server what it stored, checked."""
    from bench.cpu import cpu_between, cpu_snapshot, process_tree
    from bench.databases import seed_sent_messages
    from bench.payloads import (
        PHONE_NUMBER_ID,
        STATUS_MIX,
        WEBHOOK_PATH,
        outbound_id,
        sender_id,
        signed_bodies,
        signed_status_bodies,
    )

    run_id = f"{next(_run_ids):04d}{target.key}"
    make = signed_bodies if workload == "messages" else signed_status_bodies
    if target.counter is None:
        bodies = make(run_id, 2000, senders=SENDERS)  # the bare app stores nothing: repeats are fine
    else:
        # Enough distinct bodies for three times the best rate seen so far: a repeat would be a duplicate.
        count = int(max(5000, 3 * target.best_rps.get(workload, 0.0) * max(duration, 1.0)))
        bodies = make(run_id, count, senders=SENDERS)
        if workload == "statuses":
            seed_sent_messages(
                target.url,
                [outbound_id(run_id, n) for n in range(count)],
                [sender_id(n) for n in range(SENDERS)],
                account_id=PHONE_NUMBER_ID,
            )
    before = target.counter.settle("inbound_messages") if target.counter is not None else 0

    processes = process_tree(target.pid)  # granian: its master and web process
    process_before = cpu_snapshot(processes)
    database_before = target.backends.snapshot() if target.backends is not None else None
    result = ctx.load.run(
        port=target.port,
        path=WEBHOOK_PATH,
        bodies=bodies,
        connections=connections,
        duration=duration,
        work_dir=ctx.work_dir / "load",
    )
    process_after = cpu_snapshot(processes)
    database_after = target.backends.snapshot() if target.backends is not None else None

    key = (workload, connections)
    problems = target.problems.setdefault(key, []) if record else []
    if result.non_2xx:
        problems.append(f"{result.non_2xx} non-2xx answers")
    if target.counter is not None:
        if result.reused:
            problems.append(f"{result.reused} bodies sent twice (pool too small)")
        # wrk stops with up to one request per connection in flight: stored but never acknowledged.
        in_flight = connections + result.errors
        if workload == "messages":
            stored = target.counter.settle("inbound_messages") - before
            if stored < result.ok or stored > result.ok + in_flight:
                problems.append(f"{result.ok} acknowledged but {stored} stored")
        else:
            changed = target.counter.settle(
                "outbound_messages",
                where=f"provider_message_id LIKE 'wamid.OUT{run_id}.%' AND status IN ('delivered', 'read')",
            )
            # Every third body is a "sent" report, which changes nothing; the load generator's threads each
            # take every T-th body, so which thirds were acknowledged is known to within a few per connection.
            share = (len(STATUS_MIX) - 1) / len(STATUS_MIX)
            slack = 2 * connections
            if not share * result.ok - slack <= changed <= share * (result.ok + in_flight) + slack:
                problems.append(f"{result.ok} status webhooks acknowledged but {changed} rows changed")
    if record:
        target.results.setdefault(key, []).append(result)
        if process_after:
            database = (
                cpu_between(database_before, database_after)
                if database_before is not None and database_after is not None
                else None
            )
            process = cpu_between(process_before, process_after)
            target.cpu.setdefault(key, []).append(CpuUse(process, database, result.ok))
    return result


def _rows(ctx: Context, targets: list[Target_], skips: dict[str, str], *, duration: float, rounds: int) -> list[Row]:
    rows: list[Row] = []
    bare = targets[0]
    by_key = {t.key: t for t in targets}
    note = f"{ctx.load.name}, {rounds}×{duration:g} s"
    for workload, connections in RUNS:
        key = (workload, connections)
        base = bare.results.get(key, [])
        base_rps = median([r.rps for r in base])
        base_p99 = median([r.p99_ms for r in base if r.p99_ms is not None])
        if workload == "statuses":
            rows.extend(_cpu_rows(by_key, skips, workload, connections))
            continue
        for floor in (bare, by_key.get("e")):
            if floor is not None:
                results = floor.results.get(key, [])
                rows.append(
                    Row(
                        benchmark=NAME,
                        figure=f"{floor.label}, {connections} conn: req/s",
                        value=median([r.rps for r in results]),
                        unit="req/s",
                        note=f"{note}; p50 {_ms(results, 50)} / p99 {_ms(results, 99)}",
                    )
                )
        at_16 = connections == CONNECTIONS[0]
        for key_ in CANDIDATES:
            if key_ in skips:
                rows.append(skipped(NAME, f"{LABELS[key_]}, {connections} conn", skips[key_]))
                continue
            target = by_key[key_]
            results = target.results.get(key, [])
            invalid = "; ".join(sorted(set(target.problems.get(key, [])))) or None
            pg = target.backends is not None
            rows.append(
                Row(
                    benchmark=NAME,
                    figure=f"{target.label}, {connections} conn: req/s",
                    value=median([r.rps for r in results]),
                    unit="req/s",
                    baseline=base_rps,
                    baseline_label="a",
                    target=Target(">=", TARGET_RATIO_16) if at_16 and pg else None,
                    note=note,
                    invalid=invalid,
                )
            )
            p99_target = None
            if pg:
                p99_target = Target("<", TARGET_P99_MS, on="value") if at_16 else Target("<", TARGET_P99_RATIO_64)
            rows.append(
                Row(
                    benchmark=NAME,
                    figure=f"{target.label}, {connections} conn: p99 latency",
                    value=median([r.p99_ms for r in results if r.p99_ms is not None]),
                    unit="ms",
                    baseline=base_p99,
                    baseline_label="a",
                    target=p99_target,
                    note=f"p50 {_ms(results, 50)}",
                    invalid=invalid,
                )
            )
        if at_16:
            rows.extend(_cpu_rows(by_key, skips, workload, connections))
    return rows


def _cpu_rows(by_key: dict[str, Target_], skips: dict[str, str], workload: Workload, connections: int) -> list[Row]:
    """CPU per acknowledged request: a (and e); b's and d's processes, backends and total (the target); c's."""
    what = "text message" if workload == "messages" else "status mix"
    key = (workload, connections)
    bare = by_key["a"]
    base = _cpu(bare, key, "process")
    rows = [
        Row(
            benchmark=NAME,
            figure=f"{floor.label}, {what}, {connections} conn: CPU per request",
            value=_cpu(floor, key, "process"),
            unit="µs",
            baseline=None if floor is bare else base,
            baseline_label="" if floor is bare else "a",
            note=f"/proc utime+stime ÷ 2xx; {_rate(floor.results.get(key, []))}",
        )
        for floor in (bare, by_key.get("e"))
        if floor is not None
    ]
    for key_ in CANDIDATES:
        if key_ in skips:
            rows.append(skipped(NAME, f"{LABELS[key_]}, {what}, {connections} conn: CPU per request", skips[key_]))
            continue
        target = by_key[key_]
        invalid = "; ".join(sorted(set(target.problems.get(key, [])))) or None
        results = target.results.get(key, [])
        if target.backends is None:
            rows.append(
                Row(
                    benchmark=NAME,
                    figure=f"{target.label}, {what}, {connections} conn: CPU per request",
                    value=_cpu(target, key, "process"),
                    unit="µs",
                    baseline=base,
                    baseline_label="a",
                    note=f"one process; {_rate(results)}",
                    invalid=invalid,
                )
            )
            continue
        database = _cpu(target, key, "database")
        process = _cpu(target, key, "process")
        parts = f"chatops {_us(process)} + PostgreSQL {_us(database)}"
        rows.append(
            Row(
                benchmark=NAME,
                figure=f"{target.label}, {what}, {connections} conn: CPU per request, chatops + PostgreSQL",
                value=_cpu(target, key, "total"),
                unit="µs",
                baseline=base,
                baseline_label="a",
                target=Target("<=", TARGET_CPU_RATIO),
                note=f"{parts}; {_rate(results)}",
                invalid=invalid or (None if database is not None else "PostgreSQL backends' CPU not readable"),
            )
        )
    return rows


def _cpu(target: Target_, key: tuple[Workload, int], part: Literal["process", "database", "total"]) -> float | None:
    return median([v for use in target.cpu.get(key, []) if (v := use.per_request(part)) is not None])


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} µs"


def _rate(results: list[LoadResult]) -> str:
    rps = median([r.rps for r in results])
    return f"{rps:,.0f} req/s, p99 {_ms(results, 99)}" if rps is not None else "no runs"


def _ms(results: list[LoadResult], q: int) -> str:
    value = median([(r.p50_ms if q == 50 else r.p99_ms) or 0.0 for r in results])
    return f"{value:.1f} ms" if value is not None else "—"


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
