"""Per-turn comparison of a reference (the recording, or a saved baseline) with the candidate's answer.

A turn is ``errored`` when the candidate's turn recorded an error and the reference had none (a recorded
provider failure fails again in replay: no news), ``changed`` when its replies differ from the
reference (exactly), its transition (``stage_after``) differs, or its state differs, else ``unchanged``.
Similarity is difflib's ratio over the words of the joined replies (1.0 identical, 0.0 nothing shared).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from chatops.replay.runner import ReplayedTurn, TurnSide

Outcome = Literal["unchanged", "changed", "errored"]
_TOKENS = re.compile(r"\s+|[^\s]+")


@dataclass(frozen=True)
class Verdict:
    """The judge's grade of one changed turn: pass or fail, with a one-line reason."""

    passed: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        """``{"passed", "reason"}``."""
        return {"passed": self.passed, "reason": self.reason}


@dataclass(frozen=True)
class TurnComparison:
    """One replayed turn against its reference."""

    turn: ReplayedTurn
    reference: TurnSide
    outcome: Outcome
    exact: bool
    similarity: float
    diff: tuple[tuple[str, str], ...]  # ("=", text) kept, ("-", text) only in the reference, ("+", text) only new
    transition_changed: bool
    state_changed: bool
    cost_reference: float | None
    cost_new: float | None
    verdict: Verdict | None = None

    @property
    def new(self) -> TurnSide:
        """The candidate's side."""
        return self.turn.new


def compare_turn(turn: ReplayedTurn, reference: TurnSide, prices: Mapping[str, tuple[float, float]]) -> TurnComparison:
    """Compare ``turn.new`` with ``reference``."""
    old, new = "\n\n".join(reference.replies), "\n\n".join(turn.new.replies)
    exact = old == new
    similarity = 1.0 if exact else _similarity(old, new)
    transition_changed = reference.stage_after != turn.new.stage_after
    state_changed = reference.state_after != turn.new.state_after
    if turn.new.error and not reference.error:
        outcome: Outcome = "errored"
    elif not exact or transition_changed or state_changed:
        outcome = "changed"
    else:
        outcome = "unchanged"
    return TurnComparison(
        turn=turn,
        reference=reference,
        outcome=outcome,
        exact=exact,
        similarity=round(similarity, 4),
        diff=() if exact else word_diff(old, new),
        transition_changed=transition_changed,
        state_changed=state_changed,
        cost_reference=cost(reference, prices),
        cost_new=cost(turn.new, prices),
    )


def _similarity(old: str, new: str) -> float:
    a, b = old.split(), new.split()
    if not a and not b:
        return 1.0
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def word_diff(old: str, new: str) -> tuple[tuple[str, str], ...]:
    """The word-level diff of two texts as ``(op, text)`` pieces (whitespace kept, so the pieces rebuild both)."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    pieces: list[tuple[str, str]] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            pieces.append(("=", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(("-", "".join(a[i1:i2])))
        if j2 > j1:
            pieces.append(("+", "".join(b[j1:j2])))
    return tuple(pieces)


def tokens(side: TurnSide) -> int:
    """Total tokens the side's AI calls used (0 without AI)."""
    return int((side.usage or {}).get("total_tokens") or 0)


def cost(side: TurnSide, prices: Mapping[str, tuple[float, float]]) -> float | None:
    """US dollars of the side's AI calls at ``prices`` (per million tokens); 0 without AI; None: model unpriced."""
    if not side.usage:
        return 0.0
    price = prices.get(side.model or "")
    if price is None:
        return None
    prompt = float(side.usage.get("prompt_tokens") or 0)
    completion = float(side.usage.get("completion_tokens") or 0)
    return (prompt * price[0] + completion * price[1]) / 1_000_000
