"""``chatops doctor``: one list of checks of a deployment, each pass/warn/fail (or skip) with a hint.

:func:`run_doctor` runs them in order: the configuration and the bot on disk (:mod:`.local`), the database and
what it says about the running processes (:mod:`.database`), then the services over the network (:mod:`.remote`:
the Graph API token, OpenAI and the model, a running server's verify-token handshake), unless ``offline``.

Reads only: no check writes to the database or sends a message. Raises nothing of its own: a failure is a
:class:`Check` with status ``fail``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from chatops.config.settings import Settings

Status = Literal["pass", "warn", "fail", "skip"]
NETWORK_TIMEOUT = 5.0  # seconds per network check: a doctor that hangs is no help


@dataclass(frozen=True)
class Check:
    """One check: ``name`` (short, stable), ``status``, what was found (``detail``) and what to do (``hint``)."""

    name: str
    status: Status
    detail: str
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status, "detail": self.detail, "hint": self.hint}


def failed(checks: list[Check]) -> bool:
    """Whether any check failed (``chatops doctor`` then exits 1; warnings and skips do not count)."""
    return any(check.status == "fail" for check in checks)


def run_doctor(
    settings: Settings,
    *,
    offline: bool = False,
    url: str | None = None,
    now: Callable[[], datetime],
    timeout: float = NETWORK_TIMEOUT,
) -> Iterator[Check]:
    """Yield every check in order (the CLI prints each as it comes: a slow network check shows where it is)."""
    from chatops.doctor import database, local, remote

    yield local.settings_check()
    yield from local.bot_checks(settings)
    yield from local.channel_checks(settings)
    yield from database.database_checks(settings, now=now)
    if offline:
        yield Check("graph api", "skip", "--offline: the tokens were not tried")
        yield Check("openai", "skip", "--offline: OpenAI was not tried")
        if url:
            yield Check("webhook handshake", "skip", f"--offline: {url} was not tried")
        return
    yield from remote.graph_checks(settings, timeout=timeout)
    yield from remote.openai_checks(settings, timeout=timeout)
    if url:
        yield from remote.handshake_checks(settings, url, timeout=timeout)
