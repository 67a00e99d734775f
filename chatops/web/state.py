"""What the Flask app needs at request time, built once by ``create_app`` and kept in ``app.extensions``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.config.settings import Settings
    from chatops.metrics import Metrics

EXTENSION = "chatops"


def utc_now() -> datetime:
    """The real clock (tests and ``simulate --at`` inject another)."""
    return datetime.now(UTC)


@dataclass
class WebState:
    """Settings, bot definition, database engine, clock and metrics of one app, plus readiness checks."""

    settings: Settings
    bot: Any
    db: sa.Engine
    metrics: Metrics
    clock: Callable[[], datetime] = utc_now
    insecure_skip_signature: bool = False
    readiness_checks: list[Callable[[], list[str]]] = field(default_factory=list)
    readiness_warnings: list[Callable[[], list[str]]] = field(default_factory=list)

    def readiness_problems(self) -> list[str]:
        """Problems reported by the registered checks (e.g. a channel paused by an invalid token)."""
        return [problem for check in self.readiness_checks for problem in check()]

    def readiness_notes(self) -> list[str]:
        """Warnings that do not make the process unready (e.g. rows waiting for a disabled channel)."""
        return [note for check in self.readiness_warnings for note in check()]


def web_state(app: Flask) -> WebState:
    """The state ``create_app`` stored on ``app``."""
    state = app.extensions[EXTENSION]
    assert isinstance(state, WebState)
    return state
