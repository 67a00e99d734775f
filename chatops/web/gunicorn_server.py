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
old ones after their requests, and a new background process replaces the old one (the old one finishes its
turns). SIGTERM stops gracefully (in-flight requests, then the background process); SIGINT and SIGQUIT quickly.
SIGUSR2 (Gunicorn's binary upgrade) is not supported: the ``chatops serve`` it re-executes refuses to start.

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
from chatops.engine.status_file import write_status
from chatops.metrics.multiprocess import process_ended

log = logging.getLogger(__name__)

RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds before the background process is started again
STEADY_SECONDS = 60.0  # a background process that ran this long starts the delays from the beginning again
RETIRE_SECONDS = 60.0  # an old background process (after a reload) gets this long to finish its turns


class BackgroundSupervisor:
    """Runs ``command`` as the one background process: started, restarted when it dies, replaced, stopped.

    ``job`` gives the bytes written on its standard input each time it starts; ``on_exit`` is told the pid of
    each one that has ended, once. Called from the master's loop only (no thread of its own: the master forks web
    processes, and a fork copies no thread safely).
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
        self.reaped: set[int] = set()
        self.process: subprocess.Popen[bytes] | None = None
        self.retiring: list[tuple[subprocess.Popen[bytes], float]] = []
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
        for old, _ in self.retiring:
            if old.poll() is not None:
                self._ended(old)
        self.retiring = [(old, since) for old, since in self.retiring if old.returncode is None]

    def _ended(self, process: subprocess.Popen[bytes]) -> None:
        if process.pid not in self.reaped:
            self.reaped.add(process.pid)
            if self.on_exit is not None:
                self.on_exit(process.pid)

    def maintain(self) -> None:
        """Start the process again when it died (after its delay); kill retired ones that outstay their time."""
        self.poll()
        now = time.monotonic()
        for old, since in self.retiring:
            if now - since > RETIRE_SECONDS:
                log.warning("the old background process %s did not stop within %.0fs: killed", old.pid, RETIRE_SECONDS)
                old.kill()
        if self.stopped or self.process is None:
            return
        code = self.process.returncode
        if code is None:
            if now - self.started_at > STEADY_SECONDS:
                self.failures = 0
            return
        if self.restart_at is None:
            delay = RESTART_DELAYS[min(self.failures, len(RESTART_DELAYS) - 1)]
            self.failures += 1
            self.restart_at = now + delay
            problem = (
                f"the background process (workers and sender) exited with code {code}; starting it again in {delay:g}s"
            )
            log.error("%s", problem)
            if self.status_path is not None:  # /readyz says so now, not once the status file is stale
                write_status(self.status_path, problems=[problem], warnings=[])
        elif now >= self.restart_at:
            self.start()

    def replace(self) -> None:
        """Start a new process; the old one gets SIGTERM and finishes its turns (its leases keep them single)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.retiring.append((self.process, time.monotonic()))
        self.failures = 0
        self.start()

    def stop(self, *, timeout: float = 30.0) -> None:
        """SIGTERM to every background process, then wait (SIGKILL after ``timeout``). Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        everyone = [old for old, _ in self.retiring]
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

    def start(self) -> None:
        super().start()
        host, port = self.LISTENERS[0].sock.getsockname()[:2]
        if self.chatops.background is not None:
            self.chatops.background.start()
        if self.chatops.on_ready is not None:
            self.chatops.on_ready(str(host), int(port))

    def handle_chld(self) -> None:
        if self.chatops.background is not None:
            self.chatops.background.poll()
        super().handle_chld()

    handle_cld = handle_chld

    def manage_workers(self) -> None:
        super().manage_workers()
        if self.chatops.background is not None:
            self.chatops.background.maintain()

    def handle_hup(self) -> None:
        problem = self.chatops.check_reload() if self.chatops.check_reload is not None else None
        if problem:
            log.error("reload refused, the running processes keep serving: %s", problem)
            return
        if self.chatops.background is not None:  # first: Gunicorn's reload waits for the old web processes
            self.chatops.background.replace()
        super().handle_hup()

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
