"""Benchmark 7, wake-ups: what an idle deployment costs PostgreSQL, and how soon a reply follows the acknowledgement.

On a fresh PostgreSQL database (one size: the queue queries do not depend on it, see ``scale``):

- idle CPU, before: PostgreSQL's CPU while 4 worker loops and a sender loop poll at the rates ``serve`` used before
  wake-ups (a claim every 0.2 s per worker, every 0.05 s for the sender) and find nothing;
- idle CPU, after: the same with ``chatops serve --workers 4`` idle (workers and sender wait for LISTEN/NOTIFY,
  fallback poll ``CHATOPS_POLL_SECONDS``, default 5 s). Target ≈ 0 (< 0.5 % of a core);
- webhook ack latency p50/p99 and reply latency after the ack (p50/p99): one conversation per message, messages
  posted one at a time on one connection, each waited for at the fake Graph API before the next (a bot with a fixed
  reply: no AI), so the reply latency is the queues' own: wake the worker, the turn, wake the sender, the send.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import httpx

from bench.harness import Context, standalone
from bench.results import Row, Target
from bench.stats import percentile

if TYPE_CHECKING:
    from bench.payloads import SignedBody
    from tests.fakes.graph_api import FakeGraphAPI

NAME = "wakeups"
TITLE = "wake-ups: idle cost, reply latency after the ack"
ORDER = 65

WORKERS = 4
IDLE_SECONDS = 10.0
TARGET_IDLE_PERCENT = 0.5
TARGET_REPLY_P50_MS = 50.0


def run(ctx: Context) -> list[Row]:
    from sqlalchemy.engine import make_url

    from bench.bots import write_echo_bot
    from bench.cpu import PostgresBackends, cpu_between
    from bench.payloads import WEBHOOK_PATH, signed_bodies
    from bench.scale import _idle_cpu
    from bench.serving import chatops_server, fresh_database
    from chatops.db.connect import create_db_engine
    from tests.fakes.graph_api import FakeGraphAPI

    messages = ctx.pick(200, 50)
    stages = write_echo_bot(ctx.work_dir / "wakeups-bot", ai=False)
    with FakeGraphAPI() as graph, fresh_database(ctx, "postgresql") as url:
        engine = create_db_engine(url, pool_size=WORKERS + 1)
        try:
            polling = _idle_cpu(ctx, engine) * 100
        finally:
            engine.dispose()
        server = chatops_server(
            ctx,
            options=["--workers", str(WORKERS)],
            database_url=url,
            stages=stages,
            graph_api_url=graph.graph_api_url,
            log_name="serve_wakeups_postgresql",
        )
        with server:
            time.sleep(2.0)  # every loop has looked once, the listener is connected
            backends = PostgresBackends(ctx.database_server, str(make_url(url).database))
            try:
                before = backends.snapshot()
                time.sleep(IDLE_SECONDS)
                after = backends.snapshot()
            finally:
                backends.close()
            idle = None if before is None or after is None else cpu_between(before, after) / IDLE_SECONDS * 100
            bodies = signed_bodies(f"wake{time.monotonic_ns()}", messages, senders=messages)
            acks, replies, problems = _latencies(graph, f"{server.url}{WEBHOOK_PATH}", bodies)
    ctx.log(f"wakeups: idle CPU {polling:.2f} % polling, {idle} % with wake-ups; {len(replies)} replies")
    invalid = "; ".join(problems) or None
    return [
        Row(
            NAME,
            f"PostgreSQL CPU, serve with {WORKERS} idle workers + sender: % of one core",
            value=idle,
            unit="%",
            baseline=polling,
            baseline_label="polling (0.2 s workers, 0.05 s sender)",
            target=Target("<", TARGET_IDLE_PERCENT, on="value"),
            note=f"backends' CPU over {IDLE_SECONDS:g} s, LISTEN connection included",
        ),
        _latency_row("webhook ack latency, one connection", acks, invalid),
        Row(
            NAME,
            "reply latency after the ack (worker wake-up, turn, sender wake-up, send): p50",
            value=percentile(replies, 50),
            unit="ms",
            target=Target("<", TARGET_REPLY_P50_MS, on="value"),
            note=f"p99 {_ms(percentile(replies, 99))}; {len(replies)} messages, fixed reply (no AI)",
            invalid=invalid,
        ),
    ]


def _latencies(graph: FakeGraphAPI, url: str, bodies: list[SignedBody]) -> tuple[list[float], list[float], list[str]]:
    """Post each body, time its acknowledgement, then the reply's arrival at the fake Graph API (milliseconds)."""
    acks: list[float] = []
    replies: list[float] = []
    problems: list[str] = []
    with httpx.Client(timeout=10) as client:
        for index, signed in enumerate(bodies):
            seen = sum(1 for r in graph.requests if _is_reply(r))
            started = time.perf_counter()
            response = client.post(
                url,
                content=signed.body,
                headers={"Content-Type": "application/json", "X-Hub-Signature-256": signed.signature},
            )
            acknowledged = time.perf_counter()
            if response.status_code != 200:
                problems.append(f"webhook {index}: HTTP {response.status_code}")
                continue
            acks.append((acknowledged - started) * 1000)
            deadline = acknowledged + 10.0
            while sum(1 for r in graph.requests if _is_reply(r)) <= seen and time.perf_counter() < deadline:
                time.sleep(0.0005)
            if time.perf_counter() >= deadline:
                problems.append(f"webhook {index}: no reply within 10 s")
                continue
            replies.append((time.perf_counter() - acknowledged) * 1000)
    return acks, replies, problems


def _is_reply(request: object) -> bool:
    body = getattr(request, "body", None)
    return isinstance(body, dict) and body.get("status") != "read"


def _latency_row(figure: str, values: list[float], invalid: str | None) -> Row:
    return Row(
        NAME,
        f"{figure}: p50",
        value=percentile(values, 50),
        unit="ms",
        note=f"p99 {_ms(percentile(values, 99))}",
        invalid=invalid,
    )


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
