"""The replay report: summary, the JSON document (``--json``), and the GitHub format (``--format github``).

The JSON document is the one structure every output is built from (the terminal table, the HTML page and the
GitHub summary read it), so the counts agree everywhere. docs/replay.md documents every field;
``REPORT_VERSION`` changes when a field changes meaning or goes away (new fields may appear at any version).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from chatops.replay.compare import TurnComparison, tokens

REPORT_NAME = "chatops-replay-report"
REPORT_VERSION = 1
SLOWEST = 5


@dataclass(frozen=True, kw_only=True)
class RunInfo:
    """What was run: mode, reference, candidate, and the run's own counters."""

    mode: str
    against: str  # "recording" or "baseline:<name>"
    stages: str
    bot_version: str
    total_turns: int
    interrupted: bool
    wall_seconds: float
    cache: dict[str, int] | None = None
    judge_rubric: str | None = None
    gates_failed: list[str] = field(default_factory=list)


def summarize(comparisons: Sequence[TurnComparison]) -> dict[str, Any]:
    """The summary block: counts, mean similarity, changed transitions, tokens and cost, slowest turns."""
    outcomes = Counter(c.outcome for c in comparisons)
    transitions = Counter(
        (c.turn.stage_before, c.reference.stage_after, c.new.stage_after) for c in comparisons if c.transition_changed
    )
    cost_ref = [c.cost_reference for c in comparisons]
    cost_new = [c.cost_new for c in comparisons]
    priced = all(v is not None for v in cost_ref + cost_new)
    tokens_ref = sum(tokens(c.reference) for c in comparisons)
    tokens_new = sum(tokens(c.new) for c in comparisons)
    slowest = sorted(comparisons, key=lambda c: c.turn.duration_ms, reverse=True)[:SLOWEST]
    return {
        "turns": len(comparisons),
        "unchanged": outcomes["unchanged"],
        "changed": outcomes["changed"],
        "errored": outcomes["errored"],
        "judged": sum(1 for c in comparisons if c.verdict is not None),
        "judged_failing": sum(1 for c in comparisons if c.verdict is not None and not c.verdict.passed),
        "mean_similarity": round(sum(c.similarity for c in comparisons) / len(comparisons), 4) if comparisons else 1.0,
        "state_changed": sum(1 for c in comparisons if c.state_changed),
        "transitions_changed": sum(transitions.values()),
        "changed_transitions": [
            {"from": origin, "recorded": old, "new": new, "count": count}
            for (origin, old, new), count in sorted(transitions.items(), key=lambda item: (-item[1], str(item[0])))
        ],
        "tokens": {"reference": tokens_ref, "new": tokens_new, "delta": tokens_new - tokens_ref},
        "cost_usd": {
            "reference": round(sum(v or 0.0 for v in cost_ref), 6) if priced else None,
            "new": round(sum(v or 0.0 for v in cost_new), 6) if priced else None,
            "delta": round(sum(v or 0.0 for v in cost_new) - sum(v or 0.0 for v in cost_ref), 6) if priced else None,
        },
        "slowest": [{"turn": c.turn.key, "duration_ms": c.turn.duration_ms} for c in slowest],
    }


def turn_json(comparison: TurnComparison) -> dict[str, Any]:
    """One turn of the JSON report."""
    turn = comparison.turn
    return {
        "key": turn.key,
        "conversation_id": turn.conversation_id,
        "turn_id": turn.turn_id,
        "index": turn.index,
        "channel": turn.channel,
        "started_at": turn.started_at.isoformat(),
        "stage_before": turn.stage_before,
        "user_text": turn.user_text,
        "outcome": comparison.outcome,
        "exact": comparison.exact,
        "similarity": comparison.similarity,
        "diff": [[op, text] for op, text in comparison.diff],
        "transition_changed": comparison.transition_changed,
        "state_changed": comparison.state_changed,
        "reference": comparison.reference.to_json(),
        "new": comparison.new.to_json(),
        "cost_usd": {"reference": comparison.cost_reference, "new": comparison.cost_new},
        "duration_ms": turn.duration_ms,
        "judge": comparison.verdict.to_json() if comparison.verdict else None,
    }


def build_report(info: RunInfo, comparisons: Sequence[TurnComparison]) -> dict[str, Any]:
    """The whole report as a JSON-ready document (see docs/replay.md, "The JSON report")."""
    return {
        "report": REPORT_NAME,
        "version": REPORT_VERSION,
        "run": {
            "mode": info.mode,
            "against": info.against,
            "stages": info.stages,
            "bot_version": info.bot_version,
            "total_turns": info.total_turns,
            "interrupted": info.interrupted,
            "wall_seconds": round(info.wall_seconds, 3),
            "cache": info.cache,
            "judge_rubric": info.judge_rubric,
        },
        "summary": summarize(comparisons),
        "gates": {"passed": not info.gates_failed, "failed": list(info.gates_failed)},
        "turns": [turn_json(c) for c in comparisons],
    }


def format_github(report: dict[str, Any]) -> str:
    """Workflow commands (one ``::warning``/``::error`` per changed or errored turn, at most 50) and a Markdown
    summary for ``$GITHUB_STEP_SUMMARY``; a failed gate is an ``::error``."""
    lines: list[str] = []
    shown = 0
    for turn in report["turns"]:
        if turn["outcome"] == "unchanged" or shown >= 50:
            continue
        shown += 1
        level = "error" if turn["outcome"] == "errored" else "warning"
        what = _escape(f"turn {turn['key']} ({turn['stage_before'] or 'start'}) {turn['outcome']}: " + _one_line(turn))
        lines.append(f"::{level} title=chatops replay::{what}")
    for reason in report["gates"]["failed"]:
        lines.append(f"::error title=chatops replay gate::{_escape(reason)}")
    lines.append("")
    lines.extend(markdown_summary(report))
    return "\n".join(lines) + "\n"


def markdown_summary(report: dict[str, Any]) -> list[str]:
    """The summary as a Markdown table (the GitHub step summary)."""
    s = report["summary"]
    rows = [
        ("turns compared", s["turns"]),
        ("unchanged", s["unchanged"]),
        ("changed", s["changed"]),
        ("errored", s["errored"]),
        ("judged failing", s["judged_failing"]),
        ("mean similarity", f"{s['mean_similarity']:.3f}"),
        ("transitions changed", s["transitions_changed"]),
        ("state changed", s["state_changed"]),
        ("tokens (delta)", f"{s['tokens']['new']} ({s['tokens']['delta']:+d})"),
    ]
    out = ["### chatops replay", "", "| | |", "|---|---|"]
    out += [f"| {name} | {value} |" for name, value in rows]
    if report["gates"]["failed"]:
        out += ["", "**Gates failed:**", *[f"- {reason}" for reason in report["gates"]["failed"]]]
    return out


def _one_line(turn: dict[str, Any]) -> str:
    if turn["new"]["error"]:
        return str(turn["new"]["error"])
    if turn["transition_changed"]:
        return f"goes to {turn['new']['stage_after']} instead of {turn['reference']['stage_after']}"
    if not turn["exact"]:
        return f"reply similarity {turn['similarity']:.2f}"
    return "state differs"


def _escape(text: str) -> str:
    """GitHub workflow command data escaping (%, CR, LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
