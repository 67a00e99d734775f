"""What a conversation test file says: cases, their steps, and what each step expects (frozen, located data)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from chatops.channels.events import Channel
from chatops.config.yaml_source import Path_, SourceLocation, YamlSource

# The keys of ``expect:``, in the order they are checked and reported.
EXPECT_KEYS = (
    "stage",
    "state",
    "state_contains",
    "reply",
    "reply_contains",
    "reply_not_contains",
    "reply_regex",
    "reply_count",
    "buttons",
    "max_length",
    "handoff",
    "error",
    "window_template",
    "ai_called",
    "similar_to",
    "judge",
)
ACTIONS = ("user", "button", "choose", "location", "wait")  # what a step does; exactly one per step
LATE_KEY = "answered_after"  # with a message action: the worker answers this long after the route accepted it


@dataclass(frozen=True)
class Expectation:
    """One key of a step's ``expect:``; ``path`` is its place in the YAML (``--update`` rewrites it there)."""

    key: str
    value: Any
    where: SourceLocation
    path: Path_


@dataclass(frozen=True)
class Step:
    """One thing the user does (``action``: text, a button or list choice id, a location, or time passing)."""

    number: int  # 1-based, as reported
    action: str
    value: Any  # str, (lat, lon) or timedelta
    where: SourceLocation
    path: Path_
    expectations: tuple[Expectation, ...] = ()
    answered_after: timedelta | None = None  # the worker runs this long after the webhook was accepted

    def describe(self) -> str:
        """``user: hi``, ``button: hours``, ``location: 52.52,13.4``, ``wait: 1 day, 1:00:00``."""
        late = f", answered {self.answered_after} later" if self.answered_after else ""
        if self.action == "location":
            return f"location: {self.value[0]:g},{self.value[1]:g}{late}"
        return f"{self.action}: {self.value}{late}"


@dataclass(frozen=True)
class Case:
    """One conversation: a fresh user on ``channel``, its clock starting at ``start`` (None: the run's start)."""

    name: str
    file: TestFile = field(repr=False)
    where: SourceLocation
    channel: Channel
    user_name: str | None
    locale: str | None
    start: datetime | None
    providers: dict[str, dict[str, Any]]
    steps: tuple[Step, ...]

    @property
    def id(self) -> str:
        """``file::name``, what ``-k`` matches and junit names the test."""
        return f"{self.file.display}::{self.name}"


@dataclass(frozen=True)
class TestFile:
    """One YAML file of cases; ``source`` keeps its text and node positions for errors and ``--update``."""

    path: Path
    display: str  # the path as reported (relative to the working directory when possible)
    source: YamlSource = field(repr=False)
    cases: list[Case] = field(default_factory=list, compare=False)

    __test__ = False  # not a pytest class
