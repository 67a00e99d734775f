"""Wake-ups instead of polling: a commit that creates work wakes the loops waiting for it.

Two topics: ``inbox`` (new inbound messages, for the workers) and ``outbox`` (new replies, for the sender). A loop
reads :meth:`Wakeups.generation` before it looks for work and, finding none, calls :meth:`Wakeups.wait` from that
generation: whatever was announced in between is not missed.

- PostgreSQL: after a commit that created work, :func:`announce` wakes this process' loops at once and hands a
  ``NOTIFY chatops_<topic>`` to the process' notifier thread, which sends it on a pooled connection: the
  webhook never waits for it, and announcements made while one NOTIFY is in flight share the next one (a burst of
  webhooks costs a handful). Not in the write's own transaction: PostgreSQL serialises the commits of notifying
  transactions (a global lock held through the WAL flush), which would cap every webhook write at one commit
  after another. Each process with workers keeps one connection that LISTENs (:mod:`chatops.engine.wakeups`) and
  turns notifications from the other processes into :meth:`Wakeups.wake`. The payload is the delay in seconds
  before the work is due (``CHATOPS_DEBOUNCE_SECONDS``), so a debounced message is answered when its window
  closes, not at the next fallback poll. While listening, idle loops poll only every ``CHATOPS_POLL_SECONDS``
  (work that becomes due by itself: a lease run out, a conversation handed back to the bot, a NOTIFY lost with a
  process that died right after its commit); while not listening (the database is away) they poll as often as
  without wake-ups.
  A process that exits right after its commit (``chatops conversations reply``, any one-shot command) sends what
  it announced before it ends: :func:`flush_all` runs at interpreter exit and waits up to
  :data:`_EXIT_FLUSH_SECONDS` for the notifier thread.
- SQLite: no notifications between processes; loops keep polling (``idle_poll``), and the writes of this process
  (``serve``: the webhook and the workers share it) wake them at once through :func:`announce`, as on PostgreSQL.

docs/scaling.md ("Wake-ups") describes it for operators.
"""

from __future__ import annotations

import atexit
import logging
import secrets
import threading
import time
import weakref
from collections.abc import Callable

import sqlalchemy as sa

log = logging.getLogger(__name__)

TOPICS = ("inbox", "outbox")
CHANNEL_PREFIX = "chatops_"  # LISTEN/NOTIFY channel of a topic: chatops_inbox, chatops_outbox
_SLICE = 1.0  # a waiting loop looks at its stop event at least this often (Background.stop wakes it sooner)
_NOTIFIER_IDLE = 30.0  # seconds without announcements before the notifier thread ends
_MAX_TIMERS = 1024  # timed wake-ups kept per topic; beyond that the fallback poll finds the work
_EXIT_FLUSH_SECONDS = 2.0  # at exit, how long to wait for notifications still to be sent


class Wakeups:
    """The wake-ups of one database in this process (see :func:`wakeups_for`). Thread-safe."""

    def __init__(self, engine: sa.Engine | None = None, *, clock: Callable[[], float] = time.monotonic) -> None:
        # Weak: the registry maps engines to their Wakeups, and a value that held its key would keep it for ever.
        self._engine = weakref.ref(engine) if engine is not None and engine.dialect.name == "postgresql" else None
        self._clock = clock
        self._condition = threading.Condition()
        self._generation = dict.fromkeys(TOPICS, 0)
        self._timers: dict[str, list[float]] = {topic: [] for topic in TOPICS}
        self.listening = False  # a LISTEN connection is up: notifications from other processes arrive
        # PostgreSQL: what the notifier thread has to send.
        self._to_notify: set[tuple[str, float]] = set()
        self._notify_ready = threading.Event()
        self._notifier: threading.Thread | None = None
        self._in_flight = False  # the notifier thread is sending a batch
        # The engine, held while there is something to send: a one-shot command may drop its engine right after
        # the commit, and the weak reference alone would then lose the notification.
        self._holding: sa.Engine | None = None
        # Rides on this process' notifications: its listener ignores them (announce() woke its loops already).
        self.token = secrets.token_hex(6)

    def announce(self, topic: str, *, after: float = 0.0) -> None:
        """New work on ``topic`` (committed), due in ``after`` seconds: wake this process' loops and, on
        PostgreSQL, every other process' (a NOTIFY sent by the notifier thread; this call never waits for it)."""
        self.wake(topic, after=after)
        if self._engine is None:
            return
        with self._condition:
            self._to_notify.add((topic, round(after, 3)))
            self._holding = self._engine()
            if self._notifier is None:
                self._notifier = threading.Thread(target=self._notify_loop, name="chatops-notify", daemon=True)
                self._notifier.start()
        self._notify_ready.set()

    def generation(self, topic: str) -> int:
        """A counter that moves on every wake-up of ``topic``: read it before looking for work, wait from it."""
        with self._condition:
            return self._generation[topic]

    def wake(self, topic: str, *, after: float = 0.0) -> None:
        """Wake the loops waiting on ``topic`` now, or ``after`` seconds from now (work that is due later)."""
        with self._condition:
            if after > 0:
                timers = self._timers[topic]
                if len(timers) < _MAX_TIMERS:
                    timers.append(self._clock() + after)
                    self._condition.notify_all()  # a waiter may have to wake sooner than it planned
                return
            self._generation[topic] += 1
            self._condition.notify_all()

    def wake_all(self) -> None:
        """Wake every waiting loop (a listener reconnected and may have missed notifications, or a stop)."""
        for topic in TOPICS:
            self.wake(topic)

    def wait(self, topic: str, *, since: int, timeout: float, stop: threading.Event) -> bool:
        """Wait until ``topic`` moves past generation ``since``, ``timeout`` seconds pass or ``stop`` is set.

        Returns True when woken (a timed wake-up falling due counts). Issues no database statement.
        """
        deadline = self._clock() + timeout
        with self._condition:
            while True:
                if self._generation[topic] != since:
                    return True
                now = self._clock()
                timers = self._timers[topic]
                if timers and min(timers) <= now:
                    self._timers[topic] = [t for t in timers if t > now]
                    self._generation[topic] += 1
                    self._condition.notify_all()
                    return True
                if now >= deadline or stop.is_set():
                    return False
                until = min(deadline, now + _SLICE, *timers)
                self._condition.wait(max(until - now, 0.0))

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until everything announced so far has been sent (or failed to send);
        True when nothing is left."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._to_notify and not self._in_flight, timeout)

    def _notify_loop(self) -> None:
        """Send what was announced, one statement for everything announced since the last one; the thread ends
        after :data:`_NOTIFIER_IDLE` seconds without announcements (the next one starts it again).

        A NOTIFY that fails is not retried: the loops of the other processes find the work at their fallback poll.
        """
        while True:
            self._notify_ready.wait(_NOTIFIER_IDLE)
            self._notify_ready.clear()
            with self._condition:
                batch, self._to_notify = sorted(self._to_notify), set()
                if not batch and not self._notify_ready.is_set():
                    self._notifier = None
                    return
                self._in_flight = bool(batch)
            try:
                self._send(batch)
            finally:
                with self._condition:
                    self._in_flight = False
                    if not self._to_notify:
                        self._holding = None
                    self._condition.notify_all()  # flush() waits for this

    def _send(self, batch: list[tuple[str, float]]) -> None:
        engine = self._holding
        if not batch or engine is None:
            return
        payloads = [value for topic, after in batch for value in (CHANNEL_PREFIX + topic, f"{after!r}:{self.token}")]
        try:
            # A pooled connection: nothing is held between bursts. BEGIN, the SELECT and COMMIT in one round trip
            # each; the notifications leave on COMMIT.
            with engine.begin() as connection:
                connection.exec_driver_sql("SELECT " + ", ".join("pg_notify(%s, %s)" for _ in batch), tuple(payloads))
        except Exception as exc:
            log.debug("wake-ups: NOTIFY failed (the fallback poll finds the work): %s", exc)


_REGISTRY: weakref.WeakKeyDictionary[sa.Engine, Wakeups] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def wakeups_for(engine: sa.Engine) -> Wakeups:
    """This process' :class:`Wakeups` of ``engine`` (the webhook, the workers and the sender share one engine)."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(engine)
        if found is None:
            found = _REGISTRY[engine] = Wakeups(engine)
        return found


@atexit.register
def flush_all(timeout: float = _EXIT_FLUSH_SECONDS) -> None:
    """Send what this process announced and has not sent yet (at exit: a one-shot command's last commit would
    otherwise wake the other processes only at their fallback poll). Waits ``timeout`` seconds at most."""
    deadline = time.monotonic() + timeout
    with _REGISTRY_LOCK:
        pending = list(_REGISTRY.values())
    for wakeups in pending:
        wakeups.flush(max(deadline - time.monotonic(), 0.0))


def announce(engine: sa.Engine, topic: str, *, after: float = 0.0) -> None:
    """After a commit that created work on ``topic``: wake the loops of every process (see :meth:`Wakeups.announce`)."""
    wakeups_for(engine).announce(topic, after=after)
