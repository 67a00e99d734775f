"""Build what turns need from settings and the bot definition, and run workers and the sender in threads.

:class:`Background` supervises those threads: one that dies is started again (logged), and :meth:`problems`
reports a dead or stuck one, so ``/readyz`` answers 503 meanwhile (see :mod:`chatops.engine.supervision`).

``serve`` (in-process workers), ``worker`` (no HTTP) and ``simulate`` all go through :func:`build_runtime`, so
they answer exactly alike.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial

import httpx
import sqlalchemy as sa

from chatops.ai.factory import make_ai_client_from_settings, offline_warning
from chatops.ai.metered import MeteredAI, OnAICall
from chatops.channels.events import OutboundMessage
from chatops.channels.graph import GraphClient
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings
from chatops.db.wakeups import wakeups_for
from chatops.engine.instance_lock import InstanceLock
from chatops.engine.leases import LeaseKeeper, default_instance
from chatops.engine.reload import ReloadWatch, RuntimeHolder
from chatops.engine.sender import OutboxSender
from chatops.engine.supervision import RESTART_AFTER, SUPERVISE_SECONDS, DatabaseOutage, SupervisedThread
from chatops.engine.turn import BotRuntime
from chatops.engine.variables import VariableSource
from chatops.engine.wakeups import Listener
from chatops.engine.worker import Worker
from chatops.metrics import Metrics
from chatops.templating.providers import ProviderRunner, build_providers
from chatops.templating.store import TemplateStore

log = logging.getLogger(__name__)

# Without wake-ups from other processes (SQLite, or PostgreSQL while the listener is cut off) an idle sender polls
# the outbox this often: replies leave within ~50 ms of the turn. With them it waits CHATOPS_POLL_SECONDS.
SENDER_POLL_SECONDS = 0.05


def build_runtime(
    settings: Settings, bot: BotDefinition, *, http: httpx.Client | None = None, on_ai: OnAICall | None = None
) -> BotRuntime:
    """Templates, providers and the AI client for ``bot`` (reporting each call to ``on_ai`` when given). Logs the
    offline-AI warning when it applies."""
    templates = TemplateStore(bot.templates_dir)
    providers = build_providers(bot.providers, base_dir=bot.path.parent, http=http)
    ai = make_ai_client_from_settings(settings, timeout=bot.ai.timeout)
    warning = offline_warning(ai)
    if warning:
        log.warning("%s", warning)
    if on_ai is not None:
        ai = MeteredAI(ai, on_ai)
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
    """``workers`` inbox workers, one outbox sender and their lease keeper in daemon threads, supervised, stopped
    together; they count their turns, AI calls, sends and leases taken back in ``metrics`` when given.

    They share one :class:`DatabaseOutage`, so an outage is logged once per process, not once per thread, and one
    :class:`LeaseKeeper` under ``instance`` (``CHATOPS_INSTANCE``, else :func:`default_instance` of ``command``),
    which at start takes back what the previous process of that instance left. On PostgreSQL :meth:`start` first
    takes the instance's name, and refuses (InstanceInUseError) while another live process holds it.
    """

    def __init__(
        self,
        settings: Settings,
        bot: BotDefinition,
        db: sa.Engine,
        *,
        workers: int,
        clock: Callable[[], datetime],
        runtime: BotRuntime | None = None,
        metrics: Metrics | None = None,
        command: str = "serve",
    ) -> None:
        on_ai = metrics.ai_call if metrics is not None else None
        self.stop_event = threading.Event()
        self.http = httpx.Client(timeout=settings.graph_timeout)
        self.runtime = runtime or build_runtime(settings, bot, on_ai=on_ai)
        self.outage = DatabaseOutage()
        instance = settings.instance or default_instance(command)
        self.leases = LeaseKeeper(
            db,
            instance=instance,
            lease=timedelta(seconds=settings.lease_seconds),
            clock=clock,
            outage=self.outage,
            on_recovered=metrics.recovered if metrics is not None else None,
            # One live process per instance name (chatops.engine.instance_lock); SQLite is one process anyway.
            instance_lock=InstanceLock(db, instance=instance) if db.dialect.name == "postgresql" else None,
        )
        # A bot reload (chatops.engine.reload) swaps the workers' runtime between turns.
        self.holder = RuntimeHolder(
            self.runtime, ReloadWatch(db, settings, baseline=True), partial(build_runtime, settings, on_ai=on_ai)
        )
        self.wakeups = wakeups_for(db)
        # PostgreSQL tells every process of new work (LISTEN/NOTIFY); SQLite wakes only this process' loops.
        self.listener = Listener(db, self.wakeups, outage=self.outage) if db.dialect.name == "postgresql" else None
        self.workers = [
            Worker(
                self.runtime,
                db,
                settings,
                clock=clock,
                name=self.leases.holder(f"w{index}"),
                on_turn=metrics.turn_done if metrics is not None else None,
                on_rate_limited=partial(metrics.limited, "conversation") if metrics is not None else None,
                outage=self.outage,
                leases=self.leases,
                runtime_source=self.holder.current,
                wakeups=self.wakeups,
            )
            for index in range(workers)
        ]
        self.sender = OutboxSender(
            settings,
            db,
            GraphClient.from_settings(settings, self.http),
            # The current definition's template: a bot reload changes it as it changes the workers' stages.
            template_source=lambda: whatsapp_template(self.holder.current().bot),
            clock=clock,
            outage=self.outage,
            leases=self.leases,
            on_send=metrics.sent if metrics is not None else None,
            wakeups=self.wakeups,
        )
        self.threads = [
            *(SupervisedThread(f"worker {worker.name}", worker.run, worker.heartbeat) for worker in self.workers),
            SupervisedThread(
                "outbox sender", partial(self.sender.run, poll_interval=SENDER_POLL_SECONDS), self.sender.heartbeat
            ),
            SupervisedThread("lease keeper", self.leases.run, self.leases.heartbeat),
        ]
        if self.listener is not None:
            self.threads.append(SupervisedThread("wake-up listener", self.listener.run, self.listener.heartbeat))
        self._supervisor: threading.Thread | None = None

    def start(self) -> None:
        """Take the instance name, then start every thread and the supervisor that starts a dead one again.

        Raises InstanceInUseError, before any thread starts, when another live process holds the name.
        """
        self.leases.take_instance()
        for thread in self.threads:
            thread.start(self.stop_event)
        self._supervisor = threading.Thread(target=self._supervise, name="chatops-supervisor", daemon=True)
        self._supervisor.start()

    def restart_dead(self, *, now: float | None = None) -> list[str]:
        """Start again every thread that has been dead for :data:`RESTART_AFTER` seconds; returns their names."""
        now = time.monotonic() if now is None else now
        restarted = []
        for thread in self.threads:
            if thread.alive or thread.thread is None or self.stop_event.is_set():
                continue
            if thread.dead_since is None:
                thread.dead_since = now
            if now - thread.dead_since >= RESTART_AFTER:
                thread.start(self.stop_event)
                thread.restarts += 1  # after the start: whoever reads it sees the new thread
                log.error("%s: the thread had died; started it again (restart %d)", thread.name, thread.restarts)
                restarted.append(thread.name)
        return restarted

    def _supervise(self) -> None:
        while not self.stop_event.wait(SUPERVISE_SECONDS):
            try:
                self.restart_dead()
            except Exception:  # cannot start a thread (out of memory, interpreter shutting down): try next time
                log.exception("supervisor: restarting threads failed")

    def problems(self) -> list[str]:
        """What keeps the process from doing its job: a dead or stuck thread, a channel paused by a bad token …"""
        threads = [problem for thread in self.threads if (problem := thread.problem()) is not None]
        return self.leases.problems() + threads + self.sender.problems()

    def warnings(self) -> list[str]:
        """What readiness reports without failing (rows waiting for a channel this deployment does not send on)."""
        return self.sender.warnings()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Ask every thread to stop; turns and sends in flight finish, leases are released."""
        self.stop_event.set()
        self.wakeups.wake_all()  # idle loops stop now rather than at their next look
        if self._supervisor is not None:
            self._supervisor.join(timeout)
        for thread in self.threads:
            if thread.thread is not None:
                thread.thread.join(timeout)
        self.sender.close()
        self.leases.release_instance()  # last: nothing of this process runs any more under its name
        self.holder.close()
        self.http.close()
