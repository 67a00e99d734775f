"""What a benchmark reports: :class:`Row` (one figure against its baseline) and :class:`Target` (its goal)."""

from __future__ import annotations

import operator
from dataclasses import dataclass, replace
from typing import Literal

Status = Literal["pass", "FAIL", "skipped", "invalid", "error", "—"]
_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_SHOWN = {"<=": "≤", "<": "<", ">=": "≥", ">": ">"}


@dataclass(frozen=True)
class Target:
    """A goal for one figure: ``on`` the ratio to the baseline, the value itself, or the extra over the baseline.

    ``Target(">=", 0.5)`` reads "ratio ≥ 0.5"; ``Target("<", 50, on="value")`` reads "< 50 ms" for a latency.
    """

    op: Literal["<=", "<", ">=", ">"]
    limit: float
    on: Literal["ratio", "value", "extra"] = "ratio"

    def met(self, *, value: float | None, baseline: float | None) -> bool | None:
        """Whether the figure meets the target; ``None`` when a needed number is missing."""
        if value is None:
            return None
        if self.on == "value":
            subject = value
        elif baseline is None or (self.on == "ratio" and baseline == 0):
            return None
        else:
            subject = value / baseline if self.on == "ratio" else value - baseline
        return bool(_OPS[self.op](subject, self.limit))

    def describe(self, unit: str) -> str:
        """How the table shows it: ``ratio ≥ 0.5``, ``< 50 ms``, ``extra ≤ 0.3 s``."""
        shown = _SHOWN[self.op]
        if self.on == "ratio":
            return f"ratio {shown} {self.limit:g}"
        prefix = "extra " if self.on == "extra" else ""
        return f"{prefix}{shown} {self.limit:g} {unit}".rstrip()


@dataclass(frozen=True)
class Row:
    """One figure: its value (a median), the baseline measured in the same run, and the target.

    ``skipped`` / ``invalid`` / ``error`` carry the reason when the figure could not be measured or does not count
    (e.g. acknowledged webhooks missing from the database). ``note`` says how it was measured (wrk, rounds …).
    """

    benchmark: str
    figure: str
    value: float | None = None
    unit: str = ""
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    note: str = ""
    skipped: str | None = None
    invalid: str | None = None
    error: str | None = None

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    @property
    def status(self) -> Status:
        if self.error is not None:
            return "error"
        if self.skipped is not None:
            return "skipped"
        if self.invalid is not None:
            return "invalid"
        if self.target is None:
            return "—"
        met = self.target.met(value=self.value, baseline=self.baseline)
        if met is None:
            return "invalid"
        return "pass" if met else "FAIL"

    def mark_invalid(self, reason: str) -> Row:
        """This row, not counted, with ``reason``."""
        return replace(self, invalid=reason)


def skipped(benchmark: str, figure: str, reason: str) -> Row:
    """A row for a figure that cannot be measured yet, saying why."""
    return Row(benchmark=benchmark, figure=figure, skipped=reason)


class Skip(Exception):
    """Raised inside ``run(ctx)`` when the whole benchmark cannot run; the harness records one skipped row."""
