"""Heartbeated leases: one keeper per process renews every lease its workers and its sender hold.

A worker holds a conversation while its turn runs and the sender holds each reply while its request runs. The
:class:`LeaseKeeper` renews all of them every ``CHATOPS_LEASE_SECONDS / 4`` in one statement per table, so a slow AI
call keeps its lease however long it takes, and a dead process' leases run out ``CHATOPS_LEASE_SECONDS`` after
its last renewal. It renews a lease only while the thread holding it keeps its own heartbeat promise
(:class:`~chatops.engine.supervision.Heartbeat`): a thread that ``/readyz`` reports as stuck loses its leases, and
another worker takes its work over. When it starts, the keeper frees what a previous incarnation of the same
instance left (docs/operations.md "Crash recovery"): two processes of one instance never run at the same time (the
Gunicorn master starts a background process only once the previous one has exited), so what an earlier
incarnation holds was left by a process that has exited. On PostgreSQL the keeper makes sure of it: it takes back
only while it holds the instance's lock (:mod:`chatops.engine.instance_lock`), which :meth:`LeaseKeeper.take_instance`
takes before any work starts and :meth:`LeaseKeeper.run` takes again after a lost connection.

Holders are named ``<instance>/<incarnation>/<role>``: the instance is stable across restarts
(``CHATOPS_INSTANCE``, by default host name and command), the incarnation is new for every process.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
from collections.abc import Callable, Collection
from datetime import datetime, timedelta

import sqlalchemy as sa

from chatops.db.connect import storage_error
from chatops.db.leases import recover_incarnation, renew_leases
from chatops.engine.instance_lock import InstanceLock
from chatops.engine.supervision import Backoff, DatabaseOutage, Heartbeat
from chatops.errors import StorageError

log = logging.getLogger(__name__)

RENEWALS_PER_LEASE = 4  # a lease survives three missed renewals (a slow statement, a short database hiccup)

OnRecovered = Callable[[str, str, int], None]  # (work: "turn" | "send", how: "restart" | "expired", count)


def default_instance(command: str) -> str:
    """This process' stable name when ``CHATOPS_INSTANCE`` is unset: ``<host>:<command>`` (``serve``/``worker``).

    Two processes of one command on one host must set ``CHATOPS_INSTANCE`` apart (docs/configuration.md).
    """
    return f"{socket.gethostname()[:48]}:{command}"


class LeaseKeeper:
    """The leases one process holds, renewed from :meth:`run`'s thread. Thread-safe."""

    def __init__(
        self,
        db: sa.Engine,
        *,
        instance: str,
        lease: timedelta,
        clock: Callable[[], datetime],
        outage: DatabaseOutage | None = None,
        on_recovered: OnRecovered | None = None,
        instance_lock: InstanceLock | None = None,
    ) -> None:
        self.db = db
        self.instance_lock = instance_lock  # PostgreSQL: one live process per instance name
        self.instance = instance
        self.lease = lease
        self.clock = clock
        self.outage = outage or DatabaseOutage()
        self.on_recovered = on_recovered
        self.prefix = f"{instance}/{secrets.token_hex(4)}/"
        self.interval = lease.total_seconds() / RENEWALS_PER_LEASE
        self.heartbeat = Heartbeat()
        self.recovered_previous = False
        self._lock = threading.Lock()
        self._turns: dict[int, tuple[str, Heartbeat]] = {}
        self._sends: dict[int, tuple[str, Heartbeat]] = {}

    def holder(self, role: str) -> str:
        """The name this process' ``role`` (``w0``, ``sender``) holds leases under."""
        return self.prefix + role

    def hold_turn(self, conversation_id: int, holder: str, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._turns[conversation_id] = (holder, heartbeat)

    def let_go_turn(self, conversation_id: int) -> None:
        with self._lock:
            self._turns.pop(conversation_id, None)

    def hold_sends(self, row_ids: Collection[int], holder: str, heartbeat: Heartbeat) -> None:
        with self._lock:
            self._sends.update({row_id: (holder, heartbeat) for row_id in row_ids})

    def let_go_send(self, row_id: int) -> None:
        with self._lock:
            self._sends.pop(row_id, None)

    def held_sends(self) -> set[int]:
        """The rows this process is sending now (an expiry sweep must not take them back)."""
        with self._lock:
            return set(self._sends)

    def recovered(self, work: str, how: str, count: int) -> None:
        """Count leases taken back (for ``/metrics``)."""
        if count and self.on_recovered is not None:
            self.on_recovered(work, how, count)

    def renew(self) -> tuple[int, int]:
        """Renew every lease whose holding thread is on time; returns (turns, sends) renewed.

        Raises SQLAlchemy errors when the database fails (the leases then run out by themselves).
        """
        with self._lock:
            turns = {key: holder for key, (holder, beat) in self._turns.items() if beat.overdue() is None}
            sends = {key: holder for key, (holder, beat) in self._sends.items() if beat.overdue() is None}
        if not turns and not sends:
            return 0, 0
        return renew_leases(self.db, turns=turns, sends=sends, until=self.clock() + self.lease)

    def take_instance(self) -> None:
        """Take this process' instance name before any work starts (PostgreSQL; nothing on SQLite).

        Raises InstanceInUseError when another live process holds it (:mod:`chatops.engine.instance_lock`).
        """
        if self.instance_lock is not None:
            self.instance_lock.take_at_start()

    def owns_instance(self) -> bool:
        """Whether this process holds its instance name (always on SQLite): only then may it take back what other
        incarnations of the name hold."""
        return self.instance_lock is None or self.instance_lock.held

    def may_claim(self) -> bool:
        """Whether workers and the sender may take new work: not while another live process holds the name."""
        return self.instance_lock is None or self.instance_lock.may_claim()

    def problems(self) -> list[str]:
        """For ``/readyz``: another live process holds this process' instance name."""
        problem = self.instance_lock.problem() if self.instance_lock is not None else None
        return [problem] if problem is not None else []

    def release_instance(self) -> None:
        """Let the instance name go (after the last turn and send of a clean stop). Never raises."""
        if self.instance_lock is not None:
            self.instance_lock.release()

    def recover_previous(self) -> None:
        """Free what earlier incarnations of this instance left, and log it. Raises SQLAlchemy errors."""
        recovered = recover_incarnation(self.db, instance=self.instance, current=self.prefix, now=self.clock())
        self.recovered_previous = True
        if recovered.turns or recovered.sends:
            log.warning(
                "instance %s restarted: took back %d conversation(s) and %d reply(ies) its previous process left; "
                "the replies are sent again (a user may receive one of them twice)",
                self.instance,
                recovered.turns,
                recovered.sends,
            )
        self.recovered("turn", "restart", recovered.turns)
        self.recovered("send", "restart", recovered.sends)

    def run(self, stop: threading.Event) -> None:
        """Renew every ``interval`` seconds until ``stop``; hold the instance name (taking it again after a lost
        connection) and, whenever it was (re)taken, recover what other incarnations of the instance left.

        Never raises an Exception: a database outage backs off (logged once per process), anything else is logged.
        """
        outage = Backoff()
        trouble = Backoff()
        while not stop.is_set():
            self.heartbeat.beat(within=self.interval)
            try:
                self.renew()  # first: what runs keeps its leases whatever happens to the name's lock
                if self.instance_lock is not None and self.instance_lock.keep():
                    self.recovered_previous = False  # (re)taken: whatever another incarnation holds, it left
                if not self.recovered_previous and self.owns_instance():
                    self.recover_previous()
            except Exception as exc:
                error = storage_error(self.db, exc) if isinstance(exc, sa.exc.SQLAlchemyError) else exc
                if isinstance(error, StorageError):
                    wait = min(outage.failed(), self.interval)
                    self.outage.down("the lease keeper", error.message, retry_in=wait)
                else:
                    wait = trouble.failed()
                    log.error("lease keeper: %s; retry in %.2gs", error, wait, exc_info=error)
            else:
                outage.succeeded()
                trouble.succeeded()
                self.outage.up()
                wait = self.interval
            self.heartbeat.beat(within=wait)
            stop.wait(wait)
