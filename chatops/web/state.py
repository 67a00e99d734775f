"""What the Flask app needs at request time, built once by ``create_app`` and kept in ``app.extensions``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.config.settings import Settings

EXTENSION = "chatops"


@dataclass
class WebState:
    """Settings, bot definition and database engine of one app, plus hooks for readiness checks."""

    settings: Settings
    bot: Any
    db: sa.Engine
    readiness_checks: list[Callable[[], list[str]]] = field(default_factory=list)

    def readiness_problems(self) -> list[str]:
        """Problems reported by the registered checks (e.g. a channel paused by an invalid token)."""
        return [problem for check in self.readiness_checks for problem in check()]


def web_state(app: Flask) -> WebState:
    """The state ``create_app`` stored on ``app``."""
    state = app.extensions[EXTENSION]
    assert isinstance(state, WebState)
    return state
