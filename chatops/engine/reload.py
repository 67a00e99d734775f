"""Reloading the bot definition (stages.yaml and templates) without a restart, in every process of a deployment.

:func:`reload_bot` lints the files first: any error rejects the reload (:class:`BotReloadRejected`, with the
linter's messages) and every process keeps the definition it has. An accepted reload appends a row to
``bot_reloads``; every process (web and worker) watches the newest id (:class:`ReloadWatch`, at most one small
query every few seconds) and, when it moves, loads the files from its own disk — so every host must have the same
files before the reload is triggered. A process whose files fail to load, or differ from the version the reload
accepted, keeps its old definition and logs why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from chatops.config.bot import load_bot
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings
from chatops.db.bot_reloads import latest_reload_id, record_reload, reload_version
from chatops.engine.turn import BotRuntime
from chatops.errors import ChatopsError
from chatops.templating.lint import lint_bot

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0


class BotReloadRejected(ChatopsError):
    """The files on disk do not lint clean; ``problems`` are the linter's messages (``file:line:col: CODE …``)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"the bot definition has {len(problems)} error(s); the running definition stays",
            hint="fix them (`chatops lint-templates` shows the same), then reload again",
        )
        self.problems = problems


@dataclass(frozen=True)
class Reloaded:
    reload_id: int
    bot: BotDefinition


def checked_bot(settings: Settings) -> BotDefinition:
    """Lint and load the bot of ``settings``. Raises BotReloadRejected with the linter's error messages."""
    report = lint_bot(settings.stages, templates_dir=settings.templates_dir)
    errors = [f"{f.file}:{f.line}:{f.col}: {f.code} {f.text}" for f in report.findings if f.severity == "error"]
    if errors:
        raise BotReloadRejected(errors)
    return load_bot(settings.stages, templates_dir=settings.templates_dir)


def reload_bot(db: sa.Engine, settings: Settings, *, actor: str, now: datetime) -> Reloaded:
    """Check the files and, when clean, tell every process to load them. Raises BotReloadRejected."""
    bot = checked_bot(settings)
    reload_id = record_reload(db, version=bot.version or "unversioned", actor=actor, now=now)
    return Reloaded(reload_id, bot)


class ReloadWatch:
    """Follows ``bot_reloads`` for one process: :meth:`poll` returns a freshly loaded bot when the newest reload
    is one this process has not loaded yet (at most one query per ``interval`` seconds), else None."""

    def __init__(
        self,
        db: sa.Engine,
        settings: Settings,
        *,
        interval: float = CHECK_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        baseline: bool = False,
    ) -> None:
        self.db = db
        self.settings = settings
        self.interval = interval
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._next = 0.0
        # The reload this process's definition reflects. None: take the first poll's answer as the baseline (an app
        # factory must not query a database it may never open).
        self.seen: int | None = None
        if baseline:
            try:
                self.seen = latest_reload_id(db)
            except Exception:  # the database is not there yet (an outage at start): the first poll sets it
                log.debug("bot reload baseline deferred: the database is unavailable")

    def poll(self) -> BotDefinition | None:
        """A newly loaded bot, or None (nothing new, not time to look yet, or the files failed: logged)."""
        with self._lock:
            now = self.monotonic()
            if now < self._next:
                return None
            self._next = now + self.interval
            try:
                latest = latest_reload_id(self.db)
            except Exception:  # an outage: the worker and the web app report it; look again next time
                return None
            if self.seen is None or latest <= self.seen:
                self.seen = max(latest, self.seen or 0)
                return None
            self.seen = latest
        try:
            bot = load_bot(self.settings.stages, templates_dir=self.settings.templates_dir)
        except ChatopsError as exc:
            log.error("bot reload %d: this process keeps its definition: %s", latest, exc.message)
            return None
        accepted = reload_version(self.db, latest)
        if accepted not in (None, bot.version):
            # The files changed again after the reload was accepted (perhaps to something the linter refused).
            log.error(
                "bot reload %d: the files on this host are version %s, the reload accepted %s; this process keeps "
                "its definition (copy the accepted files here, then reload again)",
                latest,
                bot.version,
                accepted,
            )
            return None
        log.info("bot reload %d: loaded %s (version %s)", latest, self.settings.stages, bot.version)
        return bot


class RuntimeHolder:
    """The worker threads' shared :class:`BotRuntime`: :meth:`current` swaps in a new one after a reload.

    A replaced runtime may still be in use by a turn in flight, so it is closed one reload later.
    """

    def __init__(self, runtime: BotRuntime, watch: ReloadWatch, build: Callable[[BotDefinition], BotRuntime]) -> None:
        self.runtime = runtime
        self.watch = watch
        self.build = build
        self._retired: BotRuntime | None = None
        self._lock = threading.Lock()

    def current(self) -> BotRuntime:
        """The runtime to use for the next turn. Never raises: a failed check is logged and the old one kept."""
        try:
            bot = self.watch.poll()
            if bot is not None:
                fresh = self.build(bot)
                with self._lock:
                    if self._retired is not None:
                        self._retired.variables.runner.close()
                    self._retired, self.runtime = self.runtime, fresh
        except Exception:
            log.exception("bot reload check failed; the running definition stays")
        return self.runtime

    def close(self) -> None:
        for runtime in (self._retired, self.runtime):
            if runtime is not None:
                runtime.variables.runner.close()
