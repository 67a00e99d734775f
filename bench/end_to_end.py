"""Benchmark 2, end-to-end throughput: webhooks in, AI turns, replies out through the Graph API.

``chatops serve --workers W`` on a fresh PostgreSQL database, a loopback fake OpenAI answering every request after
a fixed 300 ms, and a loopback fake Graph API (both from tests/fakes, run in this process so that their request
logs can be read). 2,000 signed text webhooks over 400 conversations are posted (each conversation's messages on
one connection, in order); the clock runs until the fake Graph API has received the last reply. The ideal is
``messages × 0.3 s / W`` (every worker always waiting on the AI, nothing else costing time); the figure is the
achieved rate as a fraction of the ideal rate (target ≥ 0.8).

Per-turn overhead comes from the ``turns`` table: ``finished_at - started_at`` is the time the worker spent in the
turn and ``latency_ms`` the part of it spent waiting for the AI; their difference is what chatops itself costs per
turn (stage machine, variables, rendering, the SDK's own work). Claiming the conversation and committing the turn
happen outside that window and show only in the throughput figure.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING

from bench.databases import RowCounter
from bench.harness import Context, standalone
from bench.results import Row, Skip, Target
from bench.stats import percentile

if TYPE_CHECKING:
    from tests.fakes.graph_api import FakeGraphAPI

NAME = "end_to_end"
TITLE = "end-to-end throughput with workers"
ORDER = 40

AI_LATENCY_S = 0.3
WORKERS = 8
CONNECTIONS = 8  # divides both the message and conversation counts: each conversation stays on one connection
TARGET_FRACTION = 0.8
TARGET_OVERHEAD_P50_MS = 15.0


def run(ctx: Context) -> list[Row]:
    from bench.bots import write_echo_bot
    from bench.load import PythonLoad
    from bench.payloads import WEBHOOK_PATH, signed_bodies
    from bench.serving import chatops_server, fresh_database
    from tests.fakes.graph_api import FakeGraphAPI
    from tests.fakes.openai_server import FakeOpenAI

    if not ctx.has_option("serve", "--workers"):
        raise Skip("`chatops serve --workers` does not exist yet")
    messages, conversations = ctx.pick((2000, 400), (200, 40))
    assert messages % CONNECTIONS == 0
    assert conversations % CONNECTIONS == 0
    ideal = messages * AI_LATENCY_S / WORKERS
    stages = write_echo_bot(ctx.work_dir / "ai-bot", ai=True)
    figure = f"{messages:,} messages / {conversations} conversations, {WORKERS} workers: messages/s"

    with (
        FakeGraphAPI() as graph,
        FakeOpenAI(latency_ms=AI_LATENCY_S * 1000) as openai,
        fresh_database(ctx, "postgresql") as url,
    ):
        counter = RowCounter(url)
        server = chatops_server(
            ctx,
            options=["--workers", str(WORKERS), "--threads", "8"],
            database_url=url,
            stages=stages,
            graph_api_url=graph.graph_api_url,
            log_name="serve_workers_postgresql",
            extra_env={"CHATOPS_AI": "openai", "OPENAI_API_KEY": "sk-bench", "OPENAI_BASE_URL": openai.base_url},
        )
        try:
            with server:
                bodies = signed_bodies(f"e2e{time.monotonic_ns()}", messages, senders=conversations)
                ctx.log(f"end_to_end: posting {messages} webhooks; ideal {ideal:.1f} s with {WORKERS} workers")
                started = time.monotonic()
                sent = PythonLoad(processes=1).run(
                    port=server.port,
                    path=WEBHOOK_PATH,
                    bodies=bodies,
                    connections=CONNECTIONS,
                    duration=120.0,
                    work_dir=ctx.work_dir,
                    max_requests=messages,
                )
                finished, problems = _wait_for_replies(
                    graph, counter, started=started, expected=messages, timeout=3 * ideal + 60
                )
                ctx.observations.setdefault("peak_rss_kib", {})["end_to_end"] = server.current_rss_peak()
                overheads = _turn_overheads(counter)
                ai_calls = len(openai.requests)
        finally:
            counter.close()

    if sent.ok != messages or sent.reused:
        problems.append(f"{sent.ok} of {messages} webhooks acknowledged ({sent.reused} repeated)")
    elapsed = (finished - started) if finished is not None else None
    invalid = "; ".join(problems) or None
    p50, p99 = percentile(overheads, 50), percentile(overheads, 99)
    note = (
        f"{elapsed:.1f} s vs ideal {ideal:.1f} s; {len(overheads)} turns, {ai_calls} AI calls"
        if elapsed is not None
        else f"ideal {ideal:.1f} s"
    )
    return [
        Row(
            benchmark=NAME,
            figure=figure,
            value=messages / elapsed if elapsed else None,
            unit="msg/s",
            baseline=WORKERS / AI_LATENCY_S,
            baseline_label="ideal",
            target=Target(">=", TARGET_FRACTION),
            note=note,
            invalid=invalid,
        ),
        Row(
            benchmark=NAME,
            figure="per-turn overhead excluding AI latency: p50",
            value=p50,
            unit="ms",
            target=Target("<=", TARGET_OVERHEAD_P50_MS, on="value"),
            note=f"p99 {p99:.1f} ms" if p99 is not None else "",
            invalid=None if overheads else "no turns recorded",
        ),
    ]


def _is_reply(request: object) -> bool:
    body = getattr(request, "body", None)
    return isinstance(body, dict) and body.get("status") != "read"  # mark-as-read calls are not replies


def _wait_for_replies(
    graph: FakeGraphAPI, counter: RowCounter, *, started: float, expected: int, timeout: float
) -> tuple[float | None, list[str]]:
    """Poll until the inbox is drained and the outbox sent; returns when the last reply arrived, and problems."""
    deadline = started + timeout
    seen, last_change = 0, None
    next_db_check = 0.0
    while time.monotonic() < deadline:
        replies = sum(1 for r in graph.requests if _is_reply(r))
        if replies != seen:
            seen, last_change = replies, time.monotonic()
        now = time.monotonic()
        if replies >= expected and now >= next_db_check:
            next_db_check = now + 0.5
            open_inbound = counter.count("inbound_messages", "status IN ('pending', 'processing')")
            open_outbound = counter.count("outbound_messages", "status IN ('pending', 'sending')")
            if open_inbound == 0 and open_outbound == 0:
                problems = []
                failed = counter.count("inbound_messages", "status = 'failed'")
                if failed:
                    problems.append(f"{failed} messages failed")
                return last_change, problems
        time.sleep(0.05)
    return None, [f"not finished within {timeout:.0f} s: {seen} of {expected} replies reached the Graph API"]


def _turn_overheads(counter: RowCounter) -> list[float]:
    """Per turn: (finished_at - started_at) - latency_ms, in ms."""
    rows = counter.rows("SELECT started_at, finished_at, latency_ms FROM turns")
    overheads = []
    for started_at, finished_at, latency_ms in rows:
        assert isinstance(started_at, datetime)
        assert isinstance(finished_at, datetime)
        total = (finished_at - started_at).total_seconds() * 1000
        overheads.append(total - float(latency_ms or 0.0))  # type: ignore[arg-type]
    return overheads


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
