"""Benchmark 1, webhook acknowledgement throughput, at 16 and 64 connections.

a. the ceiling: a bare WSGI app on waitress that reads the body and answers 200 (bench/bare_app.py);
b. ``chatops serve --no-workers`` on PostgreSQL: signature, parse, durable write, 200;
c. the same on SQLite.

Every request is a signed WhatsApp text webhook with a distinct message id (bench.payloads), pre-generated before
the run. The three servers run side by side and are loaded in turn, round after round in alternating order; the
figures are medians. After each run on b or c the rows added to ``inbound_messages`` are counted: fewer rows than
2xx answers (an acknowledged message lost), a body sent twice, or any non-2xx answer makes the figure invalid.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.harness import Context, standalone
from bench.load import LoadResult
from bench.results import Row, Skip, Target, skipped
from bench.stats import interleave, median

NAME = "webhooks"
TITLE = "webhook acknowledgement throughput"
ORDER = 30

CONNECTIONS = (16, 64)
TARGET_RATIO_16 = 0.5  # b/a at 16 connections
TARGET_P99_MS = 50.0  # for b at 16 connections, like the ratio
SERVER_THREADS = 8  # chatops serve's default; the bare app gets the same
SENDERS = 5  # a handful of conversations, like a busy small business
_run_ids = itertools.count(1)


@dataclass
class Target_:
    """One server under load, and what its runs produced (mutable: filled in round by round)."""

    key: str
    label: str
    port: int
    counter: Any = None  # bench.databases.RowCounter for servers that store messages
    results: dict[int, list[LoadResult]] = field(default_factory=dict)
    problems: dict[int, list[str]] = field(default_factory=dict)
    best_rps: float = 0.0


def run(ctx: Context) -> list[Row]:
    from bench.bare_app import __name__ as bare_module
    from bench.bots import write_echo_bot
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
        targets = [Target_("a", "a. bare waitress app", bare.port)]
        servers = {"a": bare}
        skips: dict[str, str] = {}
        for key, backend, label in (("b", "postgresql", "PostgreSQL"), ("c", "sqlite", "SQLite")):
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
                    options=["--no-workers", "--threads", str(SERVER_THREADS)],
                    database_url=url,
                    stages=stages,
                    graph_api_url=graph.graph_api_url,
                    log_name=f"serve_no_workers_{backend}",
                    extra_env={"CHATOPS_AI": "offline"},
                )
            )
            counter = RowCounter(url)
            stack.callback(counter.close)
            targets.append(Target_(key, f"{key}. serve --no-workers, {label}", server.port, counter=counter))
            servers[key] = server

        for target in targets:  # warm-up: imports, pools, caches; checked like any run, not reported
            ctx.log(f"webhooks: warm-up {target.label}")
            outcome = _measure(ctx, target, connections=CONNECTIONS[0], duration=1.0)
            target.best_rps = outcome.rps
        for connections in CONNECTIONS:
            ctx.log(f"webhooks: {connections} connections, {rounds} rounds of {duration:g} s")
            interleave(
                {t.key: _runner(ctx, t, connections=connections, duration=duration) for t in targets},
                rounds=rounds,
            )
        for key, server in servers.items():
            ctx.observations.setdefault("peak_rss_kib", {})[f"webhooks:{key}"] = server.current_rss_peak()
    return _rows(ctx, targets, skips, duration=duration, rounds=rounds)


def _runner(ctx: Context, target: Target_, *, connections: int, duration: float) -> Callable[[], LoadResult]:
    def measure() -> LoadResult:
        result = _measure(ctx, target, connections=connections, duration=duration)
        target.results.setdefault(connections, []).append(result)
        target.best_rps = max(target.best_rps, result.rps)
        return result

    return measure


def _measure(ctx: Context, target: Target_, *, connections: int, duration: float) -> LoadResult:
    """One load run on ``target``; for a storing server, count the rows it added and note any discrepancy."""
    from bench.payloads import WEBHOOK_PATH, signed_bodies

    run_id = f"{next(_run_ids):04d}{target.key}"
    if target.counter is None:
        bodies = signed_bodies(run_id, 2000, senders=SENDERS)  # the bare app stores nothing: repeats are fine
    else:
        # Enough distinct bodies for three times the best rate seen so far: a repeat would be a duplicate.
        count = int(max(5000, 3 * target.best_rps * max(duration, 1.0)))
        bodies = signed_bodies(run_id, count, senders=SENDERS)
    before = target.counter.settle("inbound_messages") if target.counter is not None else 0
    result = ctx.load.run(
        port=target.port,
        path=WEBHOOK_PATH,
        bodies=bodies,
        connections=connections,
        duration=duration,
        work_dir=ctx.work_dir / "load",
    )
    problems = target.problems.setdefault(connections, [])
    if result.non_2xx:
        problems.append(f"{result.non_2xx} non-2xx answers")
    if target.counter is not None:
        stored = target.counter.settle("inbound_messages") - before
        if result.reused:
            problems.append(f"{result.reused} bodies sent twice (pool too small)")
        # wrk stops with up to one request per connection in flight: stored but never acknowledged.
        if stored < result.ok or stored > result.ok + connections + result.errors:
            problems.append(f"{result.ok} acknowledged but {stored} stored")
    return result


def _rows(ctx: Context, targets: list[Target_], skips: dict[str, str], *, duration: float, rounds: int) -> list[Row]:
    rows: list[Row] = []
    bare = targets[0]
    labels = {"b": "b. serve --no-workers, PostgreSQL", "c": "c. serve --no-workers, SQLite"}
    for connections in CONNECTIONS:
        base = bare.results.get(connections, [])
        base_rps = median([r.rps for r in base])
        base_p99 = median([r.p99_ms for r in base if r.p99_ms is not None])
        note = f"{ctx.load.name}, {rounds}×{duration:g} s"
        rows.append(
            Row(
                benchmark=NAME,
                figure=f"{bare.label}, {connections} conn: req/s",
                value=base_rps,
                unit="req/s",
                note=f"{note}; p50 {_ms(base, 50)} / p99 {_ms(base, 99)}",
            )
        )
        for key in ("b", "c"):
            if key in skips:
                rows.append(skipped(NAME, f"{labels[key]}, {connections} conn", skips[key]))
                continue
            target = next(t for t in targets if t.key == key)
            results = target.results.get(connections, [])
            invalid = "; ".join(sorted(set(target.problems.get(connections, [])))) or None
            at_16 = connections == CONNECTIONS[0]
            rows.append(
                Row(
                    benchmark=NAME,
                    figure=f"{target.label}, {connections} conn: req/s",
                    value=median([r.rps for r in results]),
                    unit="req/s",
                    baseline=base_rps,
                    baseline_label="a",
                    target=Target(">=", TARGET_RATIO_16) if at_16 and key == "b" else None,
                    note=note,
                    invalid=invalid,
                )
            )
            rows.append(
                Row(
                    benchmark=NAME,
                    figure=f"{target.label}, {connections} conn: p99 latency",
                    value=median([r.p99_ms for r in results if r.p99_ms is not None]),
                    unit="ms",
                    baseline=base_p99,
                    baseline_label="a",
                    target=Target("<", TARGET_P99_MS, on="value") if at_16 and key == "b" else None,
                    note=f"p50 {_ms(results, 50)}",
                    invalid=invalid,
                )
            )
    return rows


def _ms(results: list[LoadResult], q: int) -> str:
    value = median([(r.p50_ms if q == 50 else r.p99_ms) or 0.0 for r in results])
    return f"{value:.1f} ms" if value is not None else "—"


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
