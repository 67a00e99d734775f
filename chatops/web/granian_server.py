"""Serve the app with Granian (a Rust HTTP server): ``processes`` web processes, the background work in the master.

Process model (``chatops serve --server granian --processes N --threads T``)::

    master (Granian's main process; this one): binds the port, supervises the web processes, and runs the
    │   Background (workers + sender threads) in-process exactly as waitress mode does; it rewrites the
    │   background's status file every half second
    └── N web processes: each a fresh interpreter (multiprocessing's 'spawn', never a fork: the master runs
        threads, and a fork copies no thread safely) that builds its own app and database pool
        (:func:`load_web_app`), answers with T Python threads (Granian's blocking threads), and reads the
        status file for ``/readyz`` (a dead or stuck worker thread, or a master that stopped reporting, is a 503)

Why Granian: its HTTP parsing, connection handling and response writing run in Rust, outside the GIL. Measured
on a 2-core machine (docs/deployment.md): a webhook acknowledgement costs 440 µs of CPU instead of 700 µs on
waitress, and throughput does not collapse when connections outnumber threads.

Metrics: every process records into files of one private directory (prometheus_client's multiprocess mode, set up
by ``chatops serve``: chatops.metrics.multiprocess), so the ``/metrics`` of any web process shows the master's turns,
AI calls and sends too. The master forgets the pool gauges of each web process that has exited.

Signals: SIGTERM or SIGINT stops gracefully: Granian stops the web processes (each finishes its requests in flight,
:data:`KILL_SECONDS` at most, then SIGKILL), then the Background stops (turns and sends finish, leases released),
then the database pool is closed. SIGHUP starts new web processes one after the other, each replacing an old one
once it serves (:class:`_Server`; no request is refused meanwhile); they load the bot definition and templates from
disk again (a definition that does not load is refused first, and logged: the old processes keep serving). The
master's workers and sender are not touched: their bot definition is reloaded through the database
(``POST /api/v1/bot/reload``, chatops.engine.reload), like every process of a deployment. Web processes live in a
process group of their own: Ctrl-C in a terminal reaches the master alone, which stops them (a web process hit by
SIGINT and then the master's SIGTERM hangs in Granian 2.8). A web process whose master is gone stops itself.

Request bodies: Granian has no body limit of its own. The app's limit (``MAX_CONTENT_LENGTH``, from
``CHATOPS_MAX_BODY_BYTES``) still answers 413 before reading a body declared too large, but a body sent without
a length (chunked) is read up to that limit: keep the body limit of the reverse proxy (docs/deployment.md).

Raises ChatopsError when the port cannot be bound.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from granian.constants import Interfaces
from granian.http import HTTP1Settings
from granian.log import LogLevels, logger
from granian.server import MPServer

from chatops.config.settings import Settings

log = logging.getLogger(__name__)

# A web process told to stop gets this long for its requests in flight, then SIGKILL (Gunicorn mode: 30 s too).
KILL_SECONDS = 30
# On SIGHUP the old web process is told to stop once its successor serves, and after this long at most (a new
# interpreter starts in ~1.5 s on a quiet machine, many seconds on a busy one).
START_SECONDS = 60.0
READY_MARGIN = 0.2  # between a web process's app being built and its listener bound (Rust, in microseconds)
# Granian closes a keep-alive connection idle this long (its header read timeout, 30 s by default): longer than
# nginx keeps an idle upstream connection (keepalive_timeout 60s in docs/deployment.md), so nginx, not Granian,
# closes it and a request never meets a connection closed under it (Gunicorn mode: keepalive 75 s too).
IDLE_SECONDS = 75
PARENT_CHECK_SECONDS = 1.0  # how often a web process looks whether its master is still there
ANNOUNCE_TIMEOUT = 120.0  # the banner waits this long at most for a web process to accept a connection

# Granian's own log lines go through chatops' handlers (its format, --log-format json, URL redaction): Granian
# updates its logging configuration with this one, which replaces its loggers (a handler of their own each).
GRANIAN_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"_granian": {"propagate": True}, "granian.access": {"propagate": True}},
}


@dataclass(frozen=True)
class WebJob:
    """What each web process needs to build its app; pickled to it (a spawned interpreter shares no memory)."""

    settings: Settings
    threads: int  # Granian's blocking threads: the Python threads that run requests
    pool_size: int  # of this process's database pool
    insecure_skip_signature: bool
    status_path: Path | None  # the background's status file; None with --no-workers (nothing to report)
    ready_dir: Path  # where each web process says its app is built: web-<pid>.ready


def load_web_app(job: WebJob) -> Any:
    """The app of one web process (called in it, by Granian, before it serves). Raises ChatopsError."""
    from chatops.error_tracking import init_error_tracking
    from chatops.logs import configure_logging
    from chatops.web.wsgi import web_process_app

    if hasattr(os, "setpgid"):  # see the module docstring: Ctrl-C goes to the master alone
        os.setpgid(0, 0)
    _stop_when_orphaned(os.getppid())
    configure_logging(job.settings.log_level, job.settings.log_format)
    init_error_tracking(job.settings)
    app = web_process_app(
        job.settings,
        pool_size=job.pool_size,
        insecure_skip_signature=job.insecure_skip_signature,
        status_path=job.status_path,
        status_of="the workers and sender (in the chatops serve main process)",
    )
    ready_file(job.ready_dir, os.getpid()).touch()  # Granian binds and serves as soon as this returns
    return app


def ready_file(folder: Path, pid: int) -> Path:
    return folder / f"web-{pid}.ready"


def _stop_when_orphaned(master: int) -> None:
    """Stop this web process gracefully (SIGTERM to itself) once ``master`` is gone (killed: it could not)."""

    def watch() -> None:
        while os.getppid() == master:
            time.sleep(PARENT_CHECK_SECONDS)
        log.warning("the chatops serve main process (pid %s) is gone: this web process stops", master)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="chatops-parent-watch", daemon=True).start()


class Housekeeping:
    """The master's chores, every :data:`~chatops.engine.status_file.WRITE_SECONDS` in a thread of its own: the
    background's status file for the web processes' ``/readyz`` (when there is a background), and the pool gauges
    of web processes that have exited (chatops.metrics.multiprocess.forget_exited_processes)."""

    def __init__(self, background: Any | None, status_path: Path) -> None:
        self.background = background
        self.status_path = status_path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chatops-housekeeping", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        from chatops.engine.status_file import WRITE_SECONDS, write_status
        from chatops.metrics.multiprocess import forget_exited_processes

        while not self._stop.is_set():
            try:
                if self.background is not None:
                    problems, warnings = self.background.problems(), self.background.warnings()
                    write_status(self.status_path, problems=problems, warnings=warnings)
                forget_exited_processes()
            except Exception:  # a full disk, say: /readyz reports the stale file; try again
                log.exception("could not write the background's status file")
            self._stop.wait(WRITE_SECONDS)


class _Server(MPServer):
    """Granian's server, except that a SIGHUP stops each old web process once its successor serves.

    Granian stops it after a fixed delay (3.5 s): on a busy machine the new interpreter was still importing then,
    and with both old processes stopped before either new one listened, connections were refused (on Linux no
    listener is left: the master holds no socket there).
    """

    def __init__(self, *args: Any, ready_dir: Path, **options: Any) -> None:
        super().__init__(*args, **options)
        self.ready_dir = ready_dir

    # Granian 2.8's own method (granian/server/common.py), with its sleep replaced by _wait_until_serving.
    def _respawn_workers(self, workers: Any, spawn_target: Any, target_loader: Any, delay: float = 0) -> None:
        for idx in workers:
            self.respawned_wrks[idx] = time.monotonic()
            logger.info(f"Respawning worker-{idx + 1}")
            old_wrk: Any = self.wrks.pop(idx)  # granian.server.mp.WorkerProcess, unannotated
            wrk: Any = self._spawn_worker(idx=idx, target=spawn_target, callback_loader=target_loader)
            wrk.start()
            self.wrks.insert(idx, wrk)
            if delay:  # a reload (a crashed process is replaced at once: there is no old one to keep)
                self._wait_until_serving(wrk)
            logger.info(f"Stopping old worker-{idx + 1}")
            old_wrk.terminate()
            old_wrk.join(self.workers_kill_timeout)
            if self.workers_kill_timeout:
                if old_wrk.is_alive():
                    time.sleep(0.001)
                if old_wrk.is_alive():
                    logger.warning(f"Killing old worker-{idx + 1} after it refused to gracefully stop")
                    old_wrk.kill()
                    old_wrk.join()
            logger.info(f"Stopped old worker-{idx + 1}")
        self._metrics.incr_spawn(len(workers))

    def _wait_until_serving(self, worker: Any) -> None:
        deadline = time.monotonic() + START_SECONDS
        ready = ready_file(self.ready_dir, worker.inner.pid)
        while time.monotonic() < deadline and worker.is_alive():
            if ready.exists():
                time.sleep(READY_MARGIN)
                return
            time.sleep(0.05)
        if worker.is_alive():
            log.warning(
                "web process %s has not started within %.0fs: its predecessor stops now",
                worker.inner.pid,
                START_SECONDS,
            )


def run_granian(
    job: WebJob,
    *,
    host: str,
    port: int,
    processes: int,
    log_level: str,
    on_bound: Callable[[str, int], None],
    on_ready: Callable[[str, int], None],
    on_shutdown: Callable[[], None],
    check_reload: Callable[[], str | None],
) -> None:
    """Serve until SIGTERM/SIGINT (see the module docstring). ``on_bound`` runs in the master once the port is ours,
    before the web processes start; ``on_ready`` once one of them accepts connections (from a thread);
    ``on_shutdown`` after they have all stopped. ``check_reload`` returns why a SIGHUP is refused, or None.

    Raises ChatopsError when ``host:port`` cannot be bound; SystemExit(1) when web processes keep crashing.
    """
    from chatops.web.server import check_bind

    check_bind(host=host, port=port)
    server = _Server(
        "chatops.web.granian_server:load_web_app",  # a name for Granian's logs: the app comes from target_loader
        address=host,
        port=port,
        interface=Interfaces.WSGI,
        workers=processes,
        blocking_threads=job.threads,
        http1_settings=HTTP1Settings(header_read_timeout=IDLE_SECONDS * 1000),
        log_level=LogLevels(log_level.lower()),
        log_dictconfig=GRANIAN_LOGGING,
        respawn_failed_workers=True,
        ready_dir=job.ready_dir,
        workers_kill_timeout=KILL_SECONDS,
    )
    logging.getLogger("_granian").addFilter(_not_thread_advice)
    stop_announcing = threading.Event()

    def started() -> None:  # in the master's main thread: the port is bound, no web process runs yet
        bound_port = _bound_port(server, port)
        if sys.platform != "win32":
            signal.signal(signal.SIGHUP, partial(_on_hup, server, check_reload))  # in place of Granian's
        on_bound(host, bound_port)
        threading.Thread(
            target=_announce,
            args=(host, bound_port, on_ready, stop_announcing),
            name="chatops-announce",
            daemon=True,
        ).start()

    def stopped() -> None:
        stop_announcing.set()
        on_shutdown()

    server.on_startup(started)
    server.on_shutdown(stopped)
    previous = multiprocessing.get_start_method(allow_none=True)
    # Granian starts its workers with the default start method, a fork on Linux: see the module docstring.
    multiprocessing.set_start_method("spawn", force=True)
    try:
        server.serve(target_loader=partial(load_web_app, job), wrap_loader=False)
    finally:
        multiprocessing.set_start_method(previous, force=True)


def _not_thread_advice(record: logging.LogRecord) -> bool:
    """Drop Granian's warning that more threads than 2 × cores + 1 "seems quite high": chatops' default is 32, for
    requests that mostly wait on the database (docs/scaling.md, "Request threads"), and the warning would come with
    every start."""
    return not record.getMessage().startswith("Configuration allows spawning up to")


def _bound_port(server: MPServer, requested: int) -> int:
    """The port Granian bound (``requested``, or the one the system chose for 0).

    Granian has no accessor for it: on Linux the master binds a listener spec that the web processes bind again
    (SO_REUSEPORT), elsewhere it holds a socket that they inherit. tests/test_granian_server.py starts on port 0.
    """
    spec = getattr(server, "_ssp", None)
    if spec is not None:
        return int(spec.__getstate__()[1])
    shared = getattr(server, "_sso", None)
    if isinstance(shared, socket.socket):
        return int(shared.getsockname()[1])
    return requested


def _on_hup(server: MPServer, check_reload: Callable[[], str | None], _signum: int, _frame: FrameType | None) -> None:
    """SIGHUP: new web processes, unless the bot definition they would load is broken (see the module docstring)."""
    problem = check_reload()
    if problem:
        log.error("reload refused, the running web processes keep serving: %s", problem)
        return
    log.info("SIGHUP: replacing the web processes one after the other; the workers and the sender go on")
    server.signal_handler_reload()  # type: ignore[no-untyped-call]  # Granian's own SIGHUP handler, unannotated


def _announce(host: str, port: int, on_ready: Callable[[str, int], None], stop: threading.Event) -> None:
    """Call ``on_ready`` once a web process accepts a connection on ``port``: on Linux nothing listens before."""
    # A wildcard address is probed through the loopback of its family.
    target = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)  # noqa: S104 — read, not bound
    deadline = time.monotonic() + ANNOUNCE_TIMEOUT
    while not stop.is_set() and time.monotonic() < deadline:
        try:
            with socket.create_connection((target, port), timeout=1):
                pass
        except OSError:
            stop.wait(0.05)
            continue
        on_ready(host, port)
        return
