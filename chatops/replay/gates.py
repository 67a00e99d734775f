"""CI gates on a replay: each failed gate is a reason; any reason makes ``chatops replay`` exit 1."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Gates:
    """The thresholds (None: not checked)."""

    fail_under_similarity: float | None = None
    max_changed_transitions: int | None = None
    max_judged_failures: int | None = None
    fail_on_error: bool = False


def failed_gates(gates: Gates, summary: dict[str, Any], *, interrupted: bool = False) -> list[str]:
    """The reasons the run fails its gates (empty: it passes). An interrupted run fails any gate that is set."""
    reasons = []
    if gates.fail_under_similarity is not None and summary["mean_similarity"] < gates.fail_under_similarity:
        reasons.append(f"mean similarity {summary['mean_similarity']:.3f} is under {gates.fail_under_similarity:g}")
    if gates.max_changed_transitions is not None and summary["transitions_changed"] > gates.max_changed_transitions:
        reasons.append(
            f"{summary['transitions_changed']} transitions changed, more than {gates.max_changed_transitions}"
        )
    if gates.max_judged_failures is not None and summary["judged_failing"] > gates.max_judged_failures:
        reasons.append(f"{summary['judged_failing']} turns judged failing, more than {gates.max_judged_failures}")
    if gates.fail_on_error and summary["errored"]:
        reasons.append(f"{summary['errored']} turns errored (--fail-on-error)")
    any_set = gates != Gates()
    if interrupted and any_set:
        reasons.append("the run was interrupted before every turn was replayed")
    return reasons
