"""One live process per instance name: a process with workers holds its name for its whole life (PostgreSQL).

Leases are held under ``<instance>/<incarnation>/<role>``, and a process that starts takes back at once what
earlier incarnations of its instance hold (:mod:`chatops.engine.leases`), on the assumption that they have exited.
Two live processes under one name (two ``chatops worker`` on one host without ``CHATOPS_INSTANCE``: systemd
``worker@1``, ``worker@2``) would take back each other's turns and sends at every start, and users would get
replies twice. So every process that runs workers and a sender (``serve`` with workers, ``chatops worker``,
Gunicorn's background process: all through :class:`~chatops.engine.runtime.Background`) holds a PostgreSQL session
advisory lock on its instance name (:mod:`chatops.db.instance_lock`), on one connection of its own, and takes back
the previous incarnation's leases only while it holds it.

Decisions:

- **At start: refuse.** :meth:`InstanceLock.take_at_start` runs before any worker, and before the lease keeper
  takes anything back. If another live process holds the name it raises :class:`InstanceInUseError`, naming the
  holder: the CLI's ``Error: … Hint: …`` and exit 2, as for every ConfigError (Gunicorn's background process exits
  1 with it, and its master starts it again with the usual delays). It tries for :data:`START_GRACE_SECONDS`
  first: a predecessor that has just exited (systemd's restart, the Gunicorn master's reload) ends its session a
  moment later. A process that died frees the name with its session (SIGKILL included), so a crash-restart is
  never refused; a host that vanished frees it once the server's keepalive gives up (about 25 s). A database that
  cannot be reached at start is not a refusal: the lease keeper takes the name when it is back.
- **While running: take it again, never crash.** The lease keeper looks at the lock's connection every round
  (``CHATOPS_LEASE_SECONDS / 4``; a look at its socket, no statement) and opens a new session and takes the lock
  again when the connection was lost (the database restarted, ``pg_terminate_backend``). After every (re)taking it
  takes back what other incarnations of the name hold: holding the name means they have exited. If another process
  took the name meanwhile, this one takes no new work (workers and the sender claim nothing), keeps renewing the
  leases of what it is finishing, says so through :meth:`InstanceLock.problem` (``/readyz`` 503, ``chatops
  worker``'s output) and tries again every round: it resumes, and takes back what the other left, once the other
  has exited. A database outage is the keeper's usual outage (logged once, retried with backoff).
- **Not a fencing token.** Between a lost connection and the keeper's next look (at most one round) this process
  works without holding the name; a twin that starts in that window gets it. The lock catches the mistake it is
  for, a second process started under a name in use, at every start; it does not make two live processes safe.
- **SQLite: no lock.** SQLite is one process per database file (docs/deployment.md); a second process of one
  command on the file is a second server on another port, outside the supported shape. An OS file lock beside the
  database would add a file that backups and permissions must know about and locking that differs by platform (no
  ``fcntl`` on Windows, unreliable on network file systems), for a shape that is not supported anyway.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

from chatops.db.instance_lock import LockSession, instance_key
from chatops.errors import InstanceInUseError, StorageError

log = logging.getLogger(__name__)

START_GRACE_SECONDS = 3.0  # how long a start waits for a predecessor's session to end before refusing
RETRY_SECONDS = 0.1
DOCS = "docs/operations.md#crash-recovery"
HINT = (
    "give each process its own CHATOPS_INSTANCE (e.g. worker-1, worker-2), stable across its restarts; "
    f"stop the other process if it should not run ({DOCS})"
)


class InstanceLock:
    """This process' hold on its instance name; used by the lease keeper (see the module docstring). Thread-safe."""

    def __init__(
        self,
        db: sa.Engine,
        *,
        instance: str,
        grace: float = START_GRACE_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.db = db
        self.instance = instance
        self.key = instance_key(instance)
        self.grace = grace
        self.sleep = sleep
        self.held = False
        self.taken_by: str | None = None  # another live process holds the name: who, as the server tells
        self._session: LockSession | None = None
        self._lock = threading.Lock()

    def take_at_start(self) -> None:
        """Take the name before any work starts.

        Raises InstanceInUseError when another live process still holds it after :attr:`grace` seconds. When the
        database cannot be reached, returns (the lease keeper's :meth:`keep` takes it once the database is back).
        """
        deadline = time.monotonic() + self.grace
        while True:
            try:
                self.keep(quiet=True)
            except StorageError as exc:
                log.debug("instance %s: the name is taken once the database is back: %s", self.instance, exc)
                return
            if self.taken_by is None:
                return
            if time.monotonic() >= deadline:
                break
            self.sleep(RETRY_SECONDS)
        holder = self.taken_by
        self.release()
        raise InstanceInUseError(
            f"instance {self.instance!r} is in use by another running process: {holder}; two processes under one "
            "name would take back each other's conversations and replies",
            hint=HINT,
        )

    def keep(self, *, quiet: bool = False) -> bool:
        """Hold the name: take it again on a new session when its connection was lost, or when another process had
        it. Returns ``True`` when this call took it (the caller then takes back what other incarnations left).
        Logs when another process has the name (unless ``quiet``: a start that is refused says it itself).

        Raises StorageError when the database fails (the lock is then not held; the next call tries again).
        """
        with self._lock:
            if self._session is not None and not self._session.alive():
                self._session.close()
                self._session = None
                if self.held:
                    log.warning("instance %s: the connection holding its name was lost; taking it again", self.instance)
                self.held = False
            if self.held:
                return False
            if self._session is None:
                self._session = LockSession(self.db, self.key)
            if not self._session.try_lock():
                holder = self._session.holder() or "a process that has just let it go"
                if self.taken_by is None and not quiet:
                    log.error("%s", self._taken_problem(holder))
                self.taken_by = holder
                return False
            if self.taken_by is not None:
                log.warning("instance %s: the name is free again; this process takes new work", self.instance)
            self.held = True
            self.taken_by = None
            return True

    def may_claim(self) -> bool:
        """Whether workers and the sender may take new work: not while another live process holds the name."""
        return self.taken_by is None

    def problem(self) -> str | None:
        """For ``/readyz``: another live process holds the name; ``None`` otherwise."""
        holder = self.taken_by
        return None if holder is None else self._taken_problem(holder)

    def release(self) -> None:
        """Let the name go (at the end of a clean stop: after the last turn and send). Never raises."""
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None
            self.held = False

    def _taken_problem(self, holder: str) -> str:
        return (
            f"instance {self.instance}: another running process holds this name ({holder}); this process takes no "
            f"new work until the name is free. Hint: {HINT}"
        )
