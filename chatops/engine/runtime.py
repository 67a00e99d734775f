"""Build what turns need from settings and the bot definition, and run workers and the sender in threads.

``serve`` (in-process workers), ``worker`` (no HTTP) and ``simulate`` all go through :func:`build_runtime`, so
they answer exactly alike.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

import httpx
import sqlalchemy as sa

from chatops.ai.factory import make_ai_client_from_settings, offline_warning
from chatops.channels.events import OutboundMessage
from chatops.channels.graph import GraphClient
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings
from chatops.engine.sender import OutboxSender
from chatops.engine.turn import BotRuntime
from chatops.engine.variables import VariableSource
from chatops.engine.worker import Worker, worker_name
from chatops.templating.providers import ProviderRunner, build_providers
from chatops.templating.store import TemplateStore

log = logging.getLogger(__name__)

SENDER_POLL_SECONDS = 0.05  # an idle sender polls the outbox this often; replies leave within ~50 ms of the turn


def build_runtime(settings: Settings, bot: BotDefinition, *, http: httpx.Client | None = None) -> BotRuntime:
    """Templates, providers and the AI client for ``bot``. Logs the offline-AI warning when it applies."""
    templates = TemplateStore(bot.templates_dir)
    providers = build_providers(bot.providers, base_dir=bot.path.parent, http=http)
    ai = make_ai_client_from_settings(settings, timeout=bot.ai.timeout)
    warning = offline_warning(ai)
    if warning:
        log.warning("%s", warning)
    return BotRuntime(bot, templates, VariableSource(bot, templates, ProviderRunner(providers)), ai)


def whatsapp_template(bot: BotDefinition) -> OutboundMessage | None:
    """The approved template sent instead of free text outside the 24-hour window, when stages.yaml has one."""
    template = bot.whatsapp_template
    if template is None:
        return None
    return OutboundMessage(
        kind="template",
        template_name=template.name,
        template_language=template.language,
        template_params=template.params,
    )


class Background:
    """``workers`` inbox workers and one outbox sender in daemon threads, stopped together."""

    def __init__(
        self,
        settings: Settings,
        bot: BotDefinition,
        db: sa.Engine,
        *,
        workers: int,
        clock: Callable[[], datetime],
        runtime: BotRuntime | None = None,
        on_turn: Callable[[str, float], None] | None = None,
    ) -> None:
        self.stop_event = threading.Event()
        self.http = httpx.Client(timeout=settings.graph_timeout)
        self.runtime = runtime or build_runtime(settings, bot)
        self.workers = [
            Worker(self.runtime, db, settings, clock=clock, name=worker_name(index), on_turn=on_turn)
            for index in range(workers)
        ]
        self.sender = OutboxSender(
            settings, db, GraphClient.from_settings(settings, self.http), template=whatsapp_template(bot), clock=clock
        )
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start every thread."""
        for worker in self.workers:
            self.threads.append(
                threading.Thread(target=worker.run, args=(self.stop_event,), name=f"worker-{worker.name}", daemon=True)
            )
        self.threads.append(
            threading.Thread(
                target=self.sender.run,
                args=(self.stop_event,),
                kwargs={"poll_interval": SENDER_POLL_SECONDS},
                name="outbox-sender",
                daemon=True,
            )
        )
        for thread in self.threads:
            thread.start()

    def problems(self) -> list[str]:
        """What keeps the process from doing its job (a channel paused by an invalid token, …)."""
        return self.sender.problems()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Ask every thread to stop; turns and sends in flight finish, leases are released."""
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout)
        self.sender.close()
        self.runtime.variables.runner.close()
        self.http.close()
