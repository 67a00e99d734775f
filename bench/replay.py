"""Benchmark 8, replay: ``chatops replay`` throughput against a fake OpenAI with 200 ms latency.

200 conversations × 5 prompt turns at concurrency 16 (``--quick``: 40 × 5), replayed in independent mode through
the real OpenAI SDK to the loopback fake (``tests/fakes/openai_server.py``, 200 ms per answer). Baseline: the ideal
time, turns × 0.2 s / 16. Target: within 1.25× of it. Then the same run again from the AI response cache: the
time per turn when no request leaves the process. ``python -m bench.replay`` runs it alone.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench.bots import write_echo_bot
from bench.harness import Context, standalone
from bench.results import Row, Target

if TYPE_CHECKING:
    from chatops.replay.corpus import CorpusConversation

NAME = "replay"
TITLE = "chatops replay against a 200 ms fake OpenAI"
ORDER = 80
AI_LATENCY_S = 0.2
CONCURRENCY = 16
TURNS_PER_CONVERSATION = 5


def run(ctx: Context) -> list[Row]:
    from chatops.ai.cache import CachedAIClient
    from chatops.ai.openai_client import OpenAIClient
    from chatops.config.bot import load_bot
    from chatops.replay.runner import Replayer
    from tests.fakes.openai_server import FakeOpenAI

    conversations = int(ctx.pick(200, 40))
    corpus = synthetic_corpus(conversations, TURNS_PER_CONVERSATION)
    turns = conversations * TURNS_PER_CONVERSATION
    ideal = turns * AI_LATENCY_S / CONCURRENCY
    with tempfile.TemporaryDirectory(dir=ctx.work_dir) as scratch:
        bot = load_bot(write_echo_bot(Path(scratch) / "bot", ai=True))
        with FakeOpenAI(latency_ms=AI_LATENCY_S * 1000) as fake, OpenAIClient("sk-bench", fake.base_url) as client:
            ai = CachedAIClient(client, Path(scratch) / "cache")
            replayer = Replayer(bot, ai, pool_size=CONCURRENCY * 2)
            try:
                ctx.log(f"replay: {turns} turns at concurrency {CONCURRENCY} (ideal {ideal:.2f} s)")
                first = replayer.run(corpus, concurrency=CONCURRENCY)
                asked = len(fake.requests)
                ctx.log(f"replay: cached re-run of {turns} turns")
                second = replayer.run(corpus, concurrency=CONCURRENCY)
            finally:
                replayer.close()
        errors = sum(1 for turn in first.turns + second.turns if turn.new.error)
        rows = [
            Row(
                benchmark=NAME,
                figure=f"{conversations} conversations × {TURNS_PER_CONVERSATION} turns, concurrency {CONCURRENCY}",
                value=first.wall_seconds,
                unit="s",
                baseline=ideal,
                baseline_label=f"ideal {turns} × {AI_LATENCY_S} s / {CONCURRENCY}",
                target=Target("<=", 1.25),
                note=f"{asked} AI requests, {errors} errored turns",
            ),
            Row(
                benchmark=NAME,
                figure="fully cached re-run, per turn",
                value=second.wall_seconds / turns * 1000,
                unit="ms",
                note=f"{len(fake.requests) - asked} AI requests (expected 0), {ai.hits} cache hits",
            ),
        ]
    if errors or len(first.turns) != turns:
        rows = [row.mark_invalid(f"{errors} turns errored, {len(first.turns)} of {turns} replayed") for row in rows]
    return rows


def synthetic_corpus(conversations: int, turns: int) -> list[CorpusConversation]:
    """``conversations`` recorded conversations of ``turns`` prompt turns each (the echo bot's ``chat`` stage)."""
    from chatops.replay.corpus import CorpusConversation, CorpusMessage, CorpusTurn

    start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    result = []
    for c in range(conversations):
        recorded = []
        for t in range(turns):
            at = start + timedelta(minutes=c, seconds=10 * t)
            text = f"question {t} of customer {c}"
            recorded.append(
                CorpusTurn(
                    id=c * turns + t + 1,
                    started_at=at,
                    finished_at=at + timedelta(seconds=1),
                    stage_before=None if t == 0 else "chat",
                    stage_after="chat",
                    stage_answered="chat",
                    user_text=text,
                    messages=(CorpusMessage(id=f"wamid.{c}.{t}", kind="text", text=text, payload={}, timestamp=at),),
                    variables={"company": "Northwind"},
                    replies=[{"text": f"echo: {text}"}],
                )
            )
        result.append(
            CorpusConversation(
                id=c + 1,
                channel="whatsapp",
                account_id="106540352242922",
                user_id=f"1555{c:07d}",
                user_name=f"Customer {c}",
                turns=tuple(recorded),
            )
        )
    return result


if __name__ == "__main__":
    raise SystemExit(standalone(NAME))
