"""Serve the app with Gunicorn: ``processes`` web processes (gthread workers), and the background work once.

Process model (``chatops serve --server gunicorn --processes N``)::

    gunicorn master (this process: binds the port, supervises)
      ├── N web processes: forked by Gunicorn, each builds its own app and database pool after the fork
      └── 1 background process: workers + sender (chatops.engine.background_process), a fresh interpreter

The background process is started by the master, never by a web process, so conversations are answered once per
deployment however many web processes there are. The master starts it again when it dies (1 s, 2 s, 4 s … at
most 30 s apart), and each web process's ``/readyz`` reads its status file, so readiness means the same as with
waitress: a dead or stuck worker thread, or a dead background process, is a 503.

Metrics: every process records into files of one private directory (prometheus_client's multiprocess mode, set
up by ``chatops serve``: chatops.metrics.multiprocess), so the ``/metrics`` of any web process shows the turns,
AI calls and sends of the background process and the webhooks of every web process. The master forgets the pool
gauges of each process it reaps; counts of ended processes stay (no reset, no double count on a reload).

SIGHUP reloads gracefully: the bot definition is checked first (a broken one is logged and the old processes keep
serving), then Gunicorn starts new web processes (which load the bot definition and templates again) and stops the
old ones after their requests, and the background process is replaced one after the other: the old one finishes
its turns and sends and exits, then the new one starts (never both at once: :class:`BackgroundSupervisor` says
why; docs/deployment.md). SIGTERM stops gracefully (in-flight requests, then the background process); SIGINT
and SIGQUIT quickly. SIGUSR2 (Gunicorn's binary upgrade) is not supported: the ``chatops serve`` it re-executes
refuses to start.

Raises ChatopsError when the port cannot be bound (Gunicorn would exit the process with its own message).
"""

from __future__ import annotations

import logging
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.arbiter import Arbiter

from chatops.engine.background_process import Job
from chatops.engine.status_file import WRITE_SECONDS, last_words, write_status, writer
from chatops.metrics.multiprocess import process_ended

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds before the background process is started again
STEADY_SECONDS = 60.0  # a background process that ran this long starts the delays from the beginning again
# A background process told to stop gets this long, then SIGKILL. Its own stop waits up to 30 s for its turns and
# sends (chatops.engine.runtime.Background.stop): only a process hung past that is killed.
STOP_SECONDS = 40.0
# After a reload the master keeps /readyz ready (with a warning) until the new process reports, at most this long.
HANDOVER_SECONDS = 60.0
HANDOVER = (
    "reloading: the background process (workers and sender) is being replaced; new messages are answered once the "
    "old one has finished its turns and sends and the new one has started"
)


class BackgroundSupervisor:
    """Runs ``command`` as the one background process: started, restarted when it dies, replaced, stopped.

    Never two at once. Every background process of a deployment holds its leases under the same instance name, and
    one that starts takes back at once whatever that name holds: it must be left by a process that has exited
    (crashed, killed or stopped), never by one still finishing a turn or a send. So a reload stops the old process
    (SIGTERM: its turns and sends in flight finish, its leases are released) and starts the new one only once the
    old one has exited; answering pauses meanwhile (the webhooks are still stored and acknowledged). The other way,
    both running side by side, needs a holder name per process and a way for each to learn which of the others
    are dead before taking their leases: more parts, for a pause of one turn.

    ``job`` gives the bytes written on its standard input each time it starts; ``on_exit`` is told the pid of
    each one that has ended, once. Called from the master's loop only (no thread of its own: the master forks web
    processes, and a fork copies no thread safely), and never blocks it.
    """

    def __init__(
        self,
        command: list[str],
        job: Callable[[], bytes],
        *,
        status_path: Path | None = None,
        on_exit: Callable[[int], None] | None = None,
    ) -> None:
        self.command = command
        self.job = job
        self.status_path = status_path
        self.on_exit = on_exit
        self.reaped: set[int] = set()  # id() of each Popen whose end was reported (a pid may come back)
        self.killed: set[int] = set()  # id() of each stopping process killed for outstaying STOP_SECONDS
        self._maintaining = False
        self.process: subprocess.Popen[bytes] | None = None  # None after a reload, until its successor starts
        self.stopping: list[tuple[subprocess.Popen[bytes], float]] = []  # told to stop by a reload, since (monotonic)
        self.handover_since: float | None = None  # a reload under way: until the new process reports
        self.vouched_at = 0.0
        self.started_at = 0.0
        self.failures = 0
        self.restart_at: float | None = None
        self.stopped = False

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdin=subprocess.PIPE)  # noqa: S603 — our own interpreter
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(self.job())
            self.process.stdin.close()
        except BrokenPipeError:  # it died at once; poll() reports it
            pass
        self.started_at = time.monotonic()
        self.restart_at = None
        log.info("background process (workers and sender) started, pid %s", self.process.pid)

    def poll(self) -> None:
        """Reap what has ended (called before Gunicorn's reaping, which would take any child)."""
        if self.process is not None and self.process.poll() is not None:
            self._ended(self.process)
        for old, since in self.stopping:
            if old.poll() is not None:
                self._ended(old)
                log.info(
                    "the previous background process %s stopped after %.1fs (code %s)",
                    old.pid,
                    time.monotonic() - since,
                    old.returncode,
                )
        self.stopping = [(old, since) for old, since in self.stopping if old.returncode is None]

    def _ended(self, process: subprocess.Popen[bytes]) -> None:
        if id(process) not in self.reaped:
            self.reaped.add(id(process))
            if self.on_exit is not None:
                self.on_exit(process.pid)

    def maintain(self) -> None:
        """Start the process once its predecessor has exited (after a reload), or again when it died (after its
        delay); kill a stopping one that outstays :data:`STOP_SECONDS`; keep ``/readyz`` informed.

        Not re-entered: older Gunicorn releases reap from their SIGCHLD handler, which may interrupt a ``maintain()`` of
        the master's loop between its check and its start of a process; both would start one.
        """
        if self._maintaining:
            return
        self._maintaining = True
        try:
            self._maintain()
        finally:
            self._maintaining = False

    def _maintain(self) -> None:
        self.poll()
        now = time.monotonic()
        for old, since in self.stopping:
            if now - since > STOP_SECONDS and id(old) not in self.killed:
                log.warning(
                    "the previous background process %s did not stop within %.0fs: killed", old.pid, STOP_SECONDS
                )
                old.kill()  # its successor takes back the leases it held, as after a crash
                self.killed.add(id(old))  # killed once, warned once
        if self.stopped:
            return
        if self.process is None:
            if not self.stopping:
                self.start()
        elif self.process.returncode is not None:
            self.handover_since = None  # no longer a reload: a dead process, which /readyz reports
            self._restart_later(self.process.returncode, now)
            return
        elif now - self.started_at > STEADY_SECONDS:
            self.failures = 0
        self._vouch(now)

    def _restart_later(self, code: int, now: float) -> None:
        if self.restart_at is None:
            delay = RESTART_DELAYS[min(self.failures, len(RESTART_DELAYS) - 1)]
            self.failures += 1
            self.restart_at = now + delay
            said = self._last_words()
            problem = (
                f"the background process (workers and sender) exited with code {code}{said}; "
                f"starting it again in {delay:g}s"
            )
            log.error("%s", problem)
            if self.status_path is not None:  # /readyz says so now, not once the status file is stale
                write_status(self.status_path, problems=[problem], warnings=[])
        elif now >= self.restart_at:
            self.start()

    def _last_words(self) -> str:
        """Why the ended process stopped, when it wrote it to the status file (e.g. its instance name is in use)."""
        if self.status_path is None or self.process is None:
            return ""
        said = last_words(self.status_path, self.process.pid)
        return f" ({'; '.join(said)})" if said else ""

    def _vouch(self, now: float) -> None:
        """During a reload, write the status file for the background process until the new one reports itself.

        Nothing is wrong meanwhile (the webhooks are stored, the new process answers them): ``/readyz`` stays 200
        and says why the answers wait, rather than 503 once the old process' last report is stale.
        """
        if self.handover_since is None or self.status_path is None:
            return
        reported = self.process is not None and writer(self.status_path) == self.process.pid
        if reported or now - self.handover_since > HANDOVER_SECONDS:
            self.handover_since = None
            return
        if now - self.vouched_at >= WRITE_SECONDS:  # maintain() runs every 0.1 s while Gunicorn reloads
            write_status(self.status_path, problems=[], warnings=[HANDOVER])
            self.vouched_at = now

    def replace(self) -> None:
        """Stop the process (SIGTERM); :meth:`maintain` starts the new one once it has exited (see the class)."""
        now = time.monotonic()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.stopping.append((self.process, now))
            log.info(
                "reload: background process %s is finishing its turns and sends; the new one starts when it has",
                self.process.pid,
            )
        self.process = None
        self.failures = 0
        self.restart_at = None
        self.handover_since = now
        self._vouch(now)

    def stop(self, *, timeout: float = 30.0) -> None:
        """SIGTERM to every background process, then wait (SIGKILL after ``timeout``). Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        everyone = [old for old, _ in self.stopping]
        if self.process is not None:
            everyone.append(self.process)
        for process in everyone:
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + timeout
        for process in everyone:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
            self._ended(process)


class _Arbiter(Arbiter):  # type: ignore[misc]  # gunicorn ships no type information
    """Gunicorn's master, plus the background process and a bot-definition check before a reload."""

    def __init__(self, app: GunicornServer) -> None:
        super().__init__(app)
        self.chatops = app
        self.reloading = False

    def start(self) -> None:
        super().start()
        host, port = self.LISTENERS[0].sock.getsockname()[:2]
        if self.chatops.background is not None:
            self.chatops.background.start()
        if self.chatops.on_ready is not None:
            self.chatops.on_ready(str(host), int(port))

    def reap_workers(self) -> None:
        # Gunicorn reaps with waitpid(-1), which would take the background process too: it is polled first. Gunicorn
        # calls this on SIGCHLD, and every 0.1 s while a reload waits (up to graceful_timeout) for the old web
        # processes to finish their requests: the background process' handover goes on meanwhile.
        if self.chatops.background is not None:
            if self.reloading:
                self.chatops.background.maintain()
            else:
                self.chatops.background.poll()
        super().reap_workers()

    def manage_workers(self) -> None:
        super().manage_workers()
        if self.chatops.background is not None:
            self.chatops.background.maintain()

    def handle_hup(self) -> None:
        problem = self.chatops.check_reload() if self.chatops.check_reload is not None else None
        if problem:
            log.error("reload refused, the running processes keep serving: %s", problem)
            return
        if self.chatops.background is not None:
            self.chatops.background.replace()
        self.reloading = True
        try:
            super().handle_hup()
        finally:
            self.reloading = False

    def stop(self, graceful: bool = True) -> None:
        super().stop(graceful)
        if self.chatops.background is not None:
            self.chatops.background.stop()


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """A Gunicorn application whose web processes each call ``load_app()`` (after the fork) for their app."""

    def __init__(
        self,
        load_app: Callable[[], Any],
        *,
        options: dict[str, Any],
        background: BackgroundSupervisor | None,
        on_ready: Callable[[str, int], None] | None,
        check_reload: Callable[[], str | None] | None,
    ) -> None:
        self.load_app = load_app
        self.options = options
        self.background = background
        self.on_ready = on_ready
        self.check_reload = check_reload
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings:  # options of newer Gunicorn releases are skipped on older ones
                self.cfg.set(key, value)

    def load(self) -> Any:
        return self.load_app()

    def run(self) -> None:
        _Arbiter(self).run()


def background_supervisor(job: Job) -> BackgroundSupervisor:
    """The supervisor of ``python -m chatops.engine.background_process``, fed ``job`` pickled on its stdin."""
    command = [sys.executable, "-m", "chatops.engine.background_process"]
    return BackgroundSupervisor(command, lambda: pickle.dumps(job), status_path=job.status_path, on_exit=process_ended)


def _web_process_exited(_arbiter: Any, worker: Any) -> None:
    """Gunicorn's ``child_exit`` hook (in the master): the pool gauges of a web process leave with it."""
    process_ended(worker.pid)


def run_gunicorn(
    load_app: Callable[[], Any],
    *,
    host: str,
    port: int,
    processes: int,
    threads: int,
    log_level: str,
    background: BackgroundSupervisor | None = None,
    on_ready: Callable[[str, int], None] | None = None,
    check_reload: Callable[[], str | None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: ``processes`` web processes of ``threads`` threads each (see module docstring)."""
    from chatops.web.server import check_bind

    check_bind(host=host, port=port)
    options = {
        "bind": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "workers": processes,
        "worker_class": "gthread",
        "threads": threads,
        "graceful_timeout": 30,
        # Longer than nginx keeps an idle upstream connection (keepalive_timeout 60s in docs/deployment.md), so
        # nginx, not Gunicorn, closes it: a request never meets a connection closed under it.
        "keepalive": 75,
        "proc_name": "chatops",
        "loglevel": log_level.lower(),
        "accesslog": None,
        # Gunicorn's control socket is a thread in the master, which then forks: off (reload with SIGHUP).
        "control_socket_disable": True,
        "child_exit": _web_process_exited,
    }
    GunicornServer(load_app, options=options, background=background, on_ready=on_ready, check_reload=check_reload).run()
