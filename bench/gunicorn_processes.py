"""Benchmark: acknowledgements per second with 1, 2 and 4 Gunicorn web processes against one waitress process.

``chatops serve --no-workers`` on PostgreSQL (signature, parse, durable write, 200), as the one process of
``--server waitress`` (the baseline) and as ``--server gunicorn --processes N`` for N in 1, 2, 4, each with 8
threads per process, all on one fresh database each. Loaded in turn, round after round in alternating order, with
signed text webhooks (distinct ids) over 32 keep-alive connections; the figures are medians of 2xx answers per
second, and each run's stored rows are counted (fewer than acknowledged makes the figure invalid).

What it says: how much more a machine acknowledges when the web side runs as several processes (the GIL is per
process). On a machine with fewer cores than processes the load generator and PostgreSQL share those cores, so the
gain flattens; the machine line of RESULTS.md says how many there were.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable

from bench.harness import Context, standalone
from bench.load import LoadResult
from bench.results import Row, Skip, skipped
from bench.stats import interleave, median

NAME = "gunicorn_processes"
TITLE = "acknowledgements/s: gunicorn with 1, 2, 4 processes vs one waitress process"
ORDER = 35
CONNECTIONS = 32
THREADS = 8
PROCESSES = (1, 2, 4)
_run_ids = itertools.count(1)


def run(ctx: Context) -> list[Row]:
    from bench.bots import write_echo_bot
    from bench.databases import RowCounter
    from bench.serving import chatops_server, fresh_database
    from tests.fakes.graph_api import FakeGraphAPI

    if not ctx.has_option("serve", "--processes"):
        return [skipped(NAME, "ack/s", "`chatops serve --server gunicorn --processes` does not exist yet")]
    duration = ctx.pick(5.0, 2.0)
    rounds = ctx.rounds(3, 1)
    stages = write_echo_bot(ctx.work_dir / "processes-bot", ai=False)
    variants = {"waitress": ["--server", "waitress"]} | {
        f"gunicorn x{n}": ["--server", "gunicorn", "--processes", str(n)] for n in PROCESSES
    }
    results: dict[str, list[LoadResult]] = {key: [] for key in variants}
    invalid: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        graph = stack.enter_context(FakeGraphAPI())
        runners: dict[str, Callable[[], LoadResult]] = {}
        for key, options in variants.items():
            try:
                url = stack.enter_context(fresh_database(ctx, "postgresql"))
            except Skip as exc:
                return [skipped(NAME, "ack/s", str(exc))]
            server = stack.enter_context(
                chatops_server(
                    ctx,
                    options=[*options, "--no-workers", "--threads", str(THREADS)],
                    database_url=url,
                    stages=stages,
                    graph_api_url=graph.graph_api_url,
                    log_name=f"processes_{key.replace(' ', '_')}",
                    extra_env={"CHATOPS_AI": "offline"},
                )
            )
            counter = RowCounter(url)
            stack.callback(counter.close)
            runners[key] = _runner(ctx, key, server.port, counter, duration, results, invalid)
        for key, measure in runners.items():  # warm-up: imports, pools; not reported
            ctx.log(f"gunicorn_processes: warm-up {key}")
            measure()
            results[key].clear()
        ctx.log(f"gunicorn_processes: {rounds} rounds of {duration:g} s at {CONNECTIONS} connections")
        interleave(runners, rounds=rounds)
    return _rows(ctx, results, invalid, duration=duration, rounds=rounds)


def _runner(
    ctx: Context,
    key: str,
    port: int,
    counter: object,
    duration: float,
    results: dict[str, list[LoadResult]],
    invalid: dict[str, str],
) -> Callable[[], LoadResult]:
    from bench.databases import RowCounter
    from bench.payloads import WEBHOOK_PATH, signed_bodies

    assert isinstance(counter, RowCounter)

    def measure() -> LoadResult:
        best = max((r.rps for r in results[key]), default=0.0)
        bodies = signed_bodies(f"P{next(_run_ids):04d}", int(max(4000, 3 * best * duration)), senders=5)
        before = counter.count("inbound_messages")
        result = ctx.load.run(
            port=port,
            path=WEBHOOK_PATH,
            bodies=bodies,
            connections=CONNECTIONS,
            duration=duration,
            work_dir=ctx.work_dir,
        )
        stored = counter.settle("inbound_messages") - before
        if result.non_2xx or result.errors or result.reused:
            invalid[key] = f"{result.non_2xx} non-2xx, {result.errors} errors, {result.reused} bodies re-sent"
        elif stored < result.ok:
            invalid[key] = f"{result.ok} acknowledged but {stored} stored"
        results[key].append(result)
        return result

    return measure


def _rows(
    ctx: Context, results: dict[str, list[LoadResult]], invalid: dict[str, str], *, duration: float, rounds: int
) -> list[Row]:
    baseline = median([r.rps for r in results["waitress"]]) if results["waitress"] else None
    note = f"{ctx.load.name}, {CONNECTIONS} connections, {THREADS} threads/process, median of {rounds} × {duration:g} s"
    rows = []
    for key, runs in results.items():
        row = Row(
            benchmark=NAME,
            figure=f"ack/s, serve --no-workers --server {key}, PostgreSQL",
            value=median([r.rps for r in runs]) if runs else None,
            unit="req/s",
            baseline=baseline if key != "waitress" else None,
            baseline_label="waitress, 1 process" if key != "waitress" else "",
            note=note,
        )
        rows.append(row.mark_invalid(invalid[key]) if key in invalid else row)
    return rows


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
