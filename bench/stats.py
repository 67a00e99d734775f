"""The arithmetic of the figures: medians, ratios, percentiles, and interleaved repetition.

The machines are shared and noisy, so a figure is never one measurement: the candidate and its baseline run in
alternating order, round after round, and the medians are compared.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

T = TypeVar("T")


def median(values: Sequence[float]) -> float | None:
    """The median of ``values``; ``None`` when there are none."""
    return statistics.median(values) if values else None


def ratio(value: float | None, baseline: float | None) -> float | None:
    """``value / baseline``; ``None`` when either is missing or the baseline is zero."""
    if value is None or baseline is None or baseline == 0:
        return None
    return value / baseline


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0–100) of ``values`` by linear interpolation between closest ranks."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def interleave(measures: Mapping[str, Callable[[], T]], *, rounds: int) -> dict[str, list[T]]:
    """Call every measure once per round, alternating the order each round (ABC, CBA, ABC …).

    Alternating cancels the advantage of going first or last (a warm cache, a CPU that has just clocked up).
    Returns the results per measure, in round order.
    """
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    names = list(measures)
    results: dict[str, list[T]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(measures[name]())
    return results
