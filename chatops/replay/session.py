"""One ``chatops replay`` run as a library call: replay, compare, judge, gate, save — and the report."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from chatops.ai.judge import judge_answer
from chatops.ai.protocol import AIClient
from chatops.config.bot_schema import BotDefinition
from chatops.errors import AIError
from chatops.replay.baseline import load_baseline, save_baseline
from chatops.replay.compare import TurnComparison, Verdict, compare_turn
from chatops.replay.corpus import CorpusConversation
from chatops.replay.gates import Gates, failed_gates
from chatops.replay.report import RunInfo, build_report, summarize
from chatops.replay.runner import Mode, ReplayedTurn, Replayer


@dataclass(frozen=True, kw_only=True)
class ReplayOptions:
    """How to run and judge: see ``chatops replay --help`` and docs/replay.md."""

    mode: Mode = "independent"
    concurrency: int = 8
    live_providers: bool = False
    against: str | None = None
    save_baseline: str | None = None
    baseline_dir: Path = Path(".chatops/baselines")
    judge_rubric: str | None = None
    gates: Gates = field(default_factory=Gates)
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)


def run_replay(
    conversations: Sequence[CorpusConversation],
    bot: BotDefinition,
    ai: AIClient,
    options: ReplayOptions,
    *,
    on_turn: Callable[[ReplayedTurn], None] | None = None,
    stop: threading.Event | None = None,
    cache_counts: Callable[[], dict[str, int]] | None = None,
) -> dict[str, Any]:
    """Replay ``conversations`` with ``bot`` and ``ai``; returns the JSON report (gates evaluated).

    Writes only the baseline file when ``options.save_baseline``. Raises BaselineError for an unknown
    ``options.against``.
    """
    baseline = load_baseline(options.baseline_dir, options.against) if options.against else None
    replayer = Replayer(bot, ai, live_providers=options.live_providers, pool_size=options.concurrency * 2)
    try:
        run = replayer.run(
            conversations, mode=options.mode, concurrency=options.concurrency, on_turn=on_turn, stop=stop
        )
    finally:
        replayer.close()
    comparisons = [
        compare_turn(turn, (baseline or {}).get(turn.key, turn.recorded), options.prices) for turn in run.turns
    ]
    if options.judge_rubric and not run.interrupted:
        comparisons = _judged(comparisons, ai, options.judge_rubric, bot.ai.model, options.concurrency)
    if options.save_baseline and not run.interrupted:
        save_baseline(options.baseline_dir, options.save_baseline, run.turns, mode=options.mode)
    info = RunInfo(
        mode=options.mode,
        against=f"baseline:{options.against}" if options.against else "recording",
        stages=str(bot.path),
        bot_version=bot.version,
        total_turns=run.total,
        interrupted=run.interrupted,
        wall_seconds=run.wall_seconds,
        cache=cache_counts() if cache_counts else None,
        judge_rubric=options.judge_rubric,
    )
    info = replace(info, gates_failed=failed_gates(options.gates, summarize(comparisons), interrupted=run.interrupted))
    return build_report(info, comparisons)


def _judged(
    comparisons: list[TurnComparison], ai: AIClient, rubric: str, model: str, concurrency: int
) -> list[TurnComparison]:
    """Grade every changed turn (not unchanged or errored ones) against ``rubric``, in parallel."""

    def grade(comparison: TurnComparison) -> TurnComparison:
        if comparison.outcome != "changed" or comparison.exact:
            return comparison
        try:
            verdict = judge_answer(
                ai,
                rubric,
                user_text=comparison.turn.user_text or "",
                old_answer="\n\n".join(comparison.reference.replies),
                new_answer="\n\n".join(comparison.new.replies),
                model=model,
            )
        except AIError as exc:
            return replace(comparison, verdict=Verdict(False, f"the judge failed: {exc}"))
        return replace(comparison, verdict=Verdict(verdict.passed, verdict.reason))

    with ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix="chatops-judge") as pool:
        return list(pool.map(grade, comparisons))
