"""Keeping background threads alive and honest: heartbeats, outage backoff, and restarting a dead thread.

- :class:`Heartbeat`: a loop says, at each step, by when it will beat again (an idle wait: its length; a turn: the
  lease; a send: the stale timeout). ``/readyz`` reports a thread whose promise has passed as stuck. A long AI call
  therefore never looks stuck while it stays within the lease that bounds every turn anyway.
- :class:`Backoff`: exponential waits with a cap, for a loop that keeps failing (database down, or a bug).
- :class:`DatabaseOutage`: one per process, shared by every worker and the sender; says once that the database is
  down and once that it is back, instead of one line per attempt.
- :class:`SupervisedThread`: runs a loop in a daemon thread, logs how it died (with the traceback), and is
  restarted by :class:`~chatops.engine.runtime.Background`.

docs/operations.md ("When something goes wrong") describes the behaviour for operators.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

HEARTBEAT_GRACE = 10.0  # seconds beyond a loop's own promise before it counts as stuck (GC pauses, a busy host)
SUPERVISE_SECONDS = 0.25  # how often Background looks for dead threads
# A dead thread stays dead this long before it is started again: /readyz reports it meanwhile, and a thread that
# dies as soon as it starts cannot spin.
RESTART_AFTER = 1.0


class Heartbeat:
    """When a loop last beat, and by when it promised to beat again (monotonic seconds). Thread-safe."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.last = clock()
        self.deadline = self.last + HEARTBEAT_GRACE

    def beat(self, *, within: float) -> None:
        """Progress now; the next beat comes within ``within`` seconds (plus :data:`HEARTBEAT_GRACE`)."""
        now = self._clock()
        with self._lock:
            self.last = now
            self.deadline = now + within + HEARTBEAT_GRACE

    def overdue(self) -> float | None:
        """When the promised next beat is late: the interval that was promised (seconds, grace included), else
        ``None``. (The promise, not the time since the last beat, so that a report about it does not change every
        second.)"""
        now = self._clock()
        with self._lock:
            return self.deadline - self.last if now > self.deadline else None


@dataclass(frozen=True)
class BackoffPolicy:
    """``base * 2**(failures-1)`` seconds after ``failures`` consecutive failures, at most ``cap``."""

    base: float = 0.25
    cap: float = 10.0

    def delay(self, failures: int) -> float:
        """The wait after the ``failures``-th failure in a row (1 for the first); 0 when there was none."""
        if failures <= 0:
            return 0.0
        return float(min(self.cap, self.base * 2.0 ** min(failures - 1, 32)))


class Backoff:
    """Consecutive failures of one loop and the wait they call for (not thread-safe: one per loop)."""

    def __init__(self, policy: BackoffPolicy = BackoffPolicy()) -> None:
        self.policy = policy
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; returns how long to wait before the next try."""
        self.failures += 1
        return self.policy.delay(self.failures)

    def succeeded(self) -> None:
        self.failures = 0


class DatabaseOutage:
    """Whether this process' background threads can reach the database; each change is logged once.

    Workers and the sender call :meth:`down` when a database call fails with StorageError and :meth:`up` after one
    succeeds. Thread-safe.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._since: float | None = None

    @property
    def is_down(self) -> bool:
        return self._since is not None

    def down(self, who: str, reason: str, *, retry_in: float) -> None:
        """A database call of ``who`` failed for ``reason``; logs only when the database was up until now."""
        with self._lock:
            if self._since is not None:
                return
            self._since = self._clock()
        log.error(
            "database unavailable (seen by %s): %s; workers and the sender retry with backoff (first in %.2gs, "
            "then up to %gs apart) and log again when it is back",
            who,
            reason,
            retry_in,
            BackoffPolicy().cap,
        )

    def up(self) -> None:
        """A database call succeeded; logs when the database was down until now."""
        if self._since is None:  # the common case, without taking the lock
            return
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("database available again after %.1fs; background work resumes", self._clock() - since)


class SupervisedThread:
    """One background loop (``target(stop)``) in a daemon thread that can be started again after it died.

    ``heartbeat`` is the loop's own; :meth:`problem` says why the thread cannot do its job (dead, or stuck).
    """

    def __init__(self, name: str, target: Callable[[threading.Event], None], heartbeat: Heartbeat) -> None:
        self.name = name
        self.target = target
        self.heartbeat = heartbeat
        self.thread: threading.Thread | None = None
        self.restarts = 0
        self.dead_since: float | None = None  # monotonic; set by the supervisor when it first sees the thread dead

    def start(self, stop: threading.Event) -> None:
        """Start (or start again) the loop in a new thread."""
        self.heartbeat.beat(within=0.0)
        self.dead_since = None
        self.thread = threading.Thread(target=self._run, args=(stop,), name=self.name, daemon=True)
        self.thread.start()

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def problem(self) -> str | None:
        """Why this thread is not doing its job, for ``/readyz``; ``None`` when it is."""
        if self.thread is None:
            return None  # not started (yet)
        if not self.thread.is_alive():
            return f"{self.name}: thread died; it is restarted within {RESTART_AFTER + SUPERVISE_SECONDS:g}s"
        promised = self.heartbeat.overdue()
        if promised is not None:
            return f"{self.name}: no progress within its heartbeat of {promised:.0f}s (stuck?)"
        return None

    def _run(self, stop: threading.Event) -> None:
        try:
            self.target(stop)
        except BaseException as exc:  # the loop lets only what is meant to end a thread escape: say so, then end
            if not stop.is_set():
                log.critical("%s: thread died: %s: %s", self.name, type(exc).__name__, exc, exc_info=exc)
