"""The LISTEN connection of a process with workers on PostgreSQL: other processes' notifications become wake-ups.

One :class:`Listener` per process (``serve``'s workers, ``chatops worker``, the Gunicorn background process) holds
one connection of its own outside the pool, LISTENs on ``chatops_inbox`` and ``chatops_outbox`` and wakes the
loops waiting in :class:`~chatops.db.wakeups.Wakeups`. Waiting on the socket costs the database nothing, so an idle
deployment issues no statement between fallback polls. When the connection breaks (the database restarted, the
network cut) the listener says so once through the process' :class:`DatabaseOutage`, the loops poll as often as
without wake-ups meanwhile, and it connects again with backoff; once listening again it wakes every loop, since
notifications sent meanwhile are lost. It beats its heartbeat at least every second while it waits, so ``/readyz``
sees it alive.
"""

from __future__ import annotations

import logging
import select
import threading
from typing import Any

import sqlalchemy as sa

from chatops.db.connect import keep_alive, storage_error
from chatops.db.wakeups import CHANNEL_PREFIX, TOPICS, Wakeups
from chatops.engine.supervision import Backoff, DatabaseOutage, Heartbeat
from chatops.errors import StorageError

log = logging.getLogger(__name__)

WAIT_SLICE = 1.0  # seconds between heartbeats (and stop checks) while no notification arrives


class Listener:
    """LISTENs for ``engine``'s notifications and wakes ``wakeups``; run :meth:`run` in a thread."""

    def __init__(self, engine: sa.Engine, wakeups: Wakeups, *, outage: DatabaseOutage | None = None) -> None:
        self.engine = engine
        self.wakeups = wakeups
        self.outage = outage or DatabaseOutage()
        self.heartbeat = Heartbeat()

    def run(self, stop: threading.Event) -> None:
        """Listen until ``stop`` is set, reconnecting with backoff. Never raises an Exception."""
        outage = Backoff()
        trouble = Backoff()
        while not stop.is_set():
            self.heartbeat.beat(within=WAIT_SLICE)
            try:
                self._listen(stop)
                return  # stopped
            except Exception as exc:
                error = storage_error(self.engine, exc) if isinstance(exc, sa.exc.SQLAlchemyError) else exc
                if isinstance(error, StorageError) or _is_connection_error(exc):
                    wait = outage.failed()
                    self.outage.down("the wake-up listener", str(error).strip(), retry_in=wait)
                else:
                    wait = trouble.failed()
                    log.error("wake-up listener: %s; retry in %.2gs", error, wait, exc_info=error)
            self.heartbeat.beat(within=wait)
            stop.wait(wait)

    def _listen(self, stop: threading.Event) -> None:
        # A connection of its own, outside the pool: it stays in LISTEN for the life of the process.
        raw = self.engine.raw_connection()
        raw.detach()
        connection: Any = raw.dbapi_connection
        try:
            connection.autocommit = True
            keep_alive(connection.fileno())
            with connection.cursor() as cursor:
                cursor.execute("; ".join(f"LISTEN {CHANNEL_PREFIX}{topic}" for topic in TOPICS))
            self.wakeups.listening = True
            self.outage.up()
            self.wakeups.wake_all()  # what was announced while nobody listened
            while not stop.is_set():
                self.heartbeat.beat(within=WAIT_SLICE)
                readable, _, _ = select.select([connection], [], [], WAIT_SLICE)
                if not readable:
                    continue
                connection.poll()  # raises when the server closed the connection
                for notification in connection.notifies:
                    topic = notification.channel.removeprefix(CHANNEL_PREFIX)
                    # This process' own announcements woke its loops already (Wakeups.announce).
                    after, _, token = notification.payload.partition(":")
                    if topic in TOPICS and token != self.wakeups.token:
                        self.wakeups.wake(topic, after=_delay(after))
                connection.notifies.clear()
        finally:
            self.wakeups.listening = False
            try:
                raw.close()
            except Exception as exc:  # already broken: nothing to give back
                log.debug("wake-up listener: closing its connection: %s", exc)


def _delay(text: str) -> float:
    """Seconds until the announced work is due (our payloads: ``<seconds>:<token>``); 0 for anything else."""
    try:
        return max(float(text or 0), 0.0)
    except ValueError:
        return 0.0


def _is_connection_error(exc: BaseException) -> bool:
    import psycopg2

    return isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError | OSError)
