"""The workers and the sender of a Gunicorn deployment, in one process of their own (``python -m`` this module).

``chatops serve --server gunicorn`` starts this process once, from the Gunicorn master, so answering and sending
run once per deployment and not once per web process. It is a fresh interpreter (not a fork of the master), so
it runs the code installed now: a reload (SIGHUP) stops it and then starts a new one, with new code and the new
bot definition (one after the other: the new one takes back its instance's leases as it starts).

Its turns, AI calls, sends and pool are counted in prometheus_client's multiprocess files (the master set the
directory in the environment), which the web processes' ``/metrics`` read.

The master writes a pickled :class:`Job` on this process's standard input (the settings carry secrets: they must
not appear in its command line). The process loads the bot, runs :class:`~chatops.engine.runtime.Background`,
rewrites its status file (:mod:`chatops.engine.status_file`) every half second for the web processes' ``/readyz``,
and stops cleanly (turns finish, leases released) on SIGTERM or SIGINT, or when the master is gone.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chatops.config.settings import Settings
from chatops.engine.status_file import WRITE_SECONDS, write_status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """What the master hands over: the settings it resolved (environment, .env and flags), how many workers."""

    settings: Settings
    workers: int
    status_path: Path


def _utc_now() -> datetime:
    return datetime.now(UTC)


def run(job: Job) -> None:
    """Run workers + sender until SIGTERM/SIGINT or the master's end, reporting to ``job.status_path``. Raises
    ChatopsError at start."""
    master = os.getppid()
    from chatops.config.bot import load_bot
    from chatops.db.connect import create_db_engine
    from chatops.engine.runtime import Background
    from chatops.error_tracking import init_error_tracking
    from chatops.logs import configure_logging
    from chatops.metrics import Metrics
    from chatops.metrics.pool import export_pool

    configure_logging(job.settings.log_level, job.settings.log_format)
    init_error_tracking(job.settings)
    bot = load_bot(job.settings.stages, templates_dir=job.settings.templates)
    db = create_db_engine(job.settings.database_url, pool_size=job.workers + 4)
    # The master set PROMETHEUS_MULTIPROC_DIR: what this process counts shows on every web process's /metrics.
    metrics = Metrics()
    export_pool(metrics, db)
    background = Background(job.settings, bot, db, workers=job.workers, clock=_utc_now, metrics=metrics)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        background.start()  # InstanceInUseError: another live process holds the server's instance name
        while not stopped.is_set():
            if os.getppid() != master:
                # The master is gone (killed: it could not stop us). Stop as Gunicorn's web processes do: a master
                # started again would start a background process under the same instance name, which must not
                # run beside this one (chatops.web.gunicorn_server.BackgroundSupervisor).
                log.warning("the Gunicorn master (pid %s) is gone: stopping the workers and the sender", master)
                break
            write_status(job.status_path, problems=background.problems(), warnings=background.warnings())
            stopped.wait(WRITE_SECONDS)
    finally:
        background.stop()
        db.dispose()


def main() -> None:
    """Entry point: read the job from standard input, run it; a ChatopsError ends the process with its message."""
    from chatops.errors import ChatopsError

    job = pickle.load(sys.stdin.buffer)  # noqa: S301 — written by our own parent process over a pipe
    try:
        run(job)
    except ChatopsError as exc:
        # For /readyz: the master quotes it when it reports the exit (BackgroundSupervisor).
        write_status(job.status_path, problems=[f"it could not start: {exc}"], warnings=[])
        print(f"Error: {exc}", file=sys.stderr)  # the master's log shows our stderr
        if exc.hint:
            print(f"Hint: {exc.hint}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
