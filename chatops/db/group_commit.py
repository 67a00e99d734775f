"""Group commit for webhooks: deliveries that arrive while a write is in flight are written together, next.

Every webhook must be durable before its 200, so each request pays for a transaction. On SQLite, which has one
writer at a time, concurrent request threads fight for the write lock (``BEGIN IMMEDIATE`` and the busy
handler's sleeps: a p99 of 600 ms at 16 connections). With group commit, one request thread at a time writes
(the *leader*); requests arriving meanwhile queue up, and when the write is done the leader hands over to the
oldest queued request, which writes everything queued as ONE batch (:func:`chatops.db.ingest.write_deliveries`:
one transaction). No extra thread: a request alone writes at once, as before. ``create_app`` uses it on both
databases (see ``chatops.web.app._webhook_store`` for the measurements): on PostgreSQL a batch is one statement
and one commit, whose cost on both sides of the socket is shared by its webhooks.

Guarantees are unchanged: a request returns only after the transaction holding its events committed, or raises
StorageError (503, Meta retries) or UnstorableError (400: the database refused one of its values). When a batch
fails:

- the database could not be reached (no statement ran): every request of the batch gets the StorageError;
- a statement failed, or the driver could not bind a value (a lone surrogate, an integer past 64 bits): each
  delivery is written again alone, so only the one the database refuses fails and the others are stored.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from chatops.channels.events import Event
from chatops.db.connect import PERMANENT_DRIVER_ERRORS, storage_error
from chatops.db.ingest import Delivery, StoreResult, delivery, write_deliveries
from chatops.errors import ChatopsError, StorageError

MAX_BATCH = 64  # deliveries per write; more wait for the next one (a request thread holds at most one)


@dataclass(eq=False)
class _Waiting:
    """One request's delivery and, once ``wake`` is set, either its outcome or the turn to lead."""

    delivery: Delivery
    wake: threading.Event = field(default_factory=threading.Event)
    result: StoreResult | None = None
    error: BaseException | None = None

    @property
    def done(self) -> bool:
        return self.result is not None or self.error is not None


class GroupCommit:
    """Writes webhooks' events durably, batching those that arrive while a write is in flight.

    ``on_batch`` is called with the number of deliveries of every write (for metrics). Thread-safe; one per
    engine and process. Works on PostgreSQL too (one statement per batch).
    """

    def __init__(
        self,
        engine: sa.Engine,
        *,
        max_batch: int = MAX_BATCH,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._queue: deque[_Waiting] = deque()
        self._writing = False  # a leader is writing; then every queued request waits for its wake-up

    @property
    def waiting(self) -> int:
        """Deliveries queued for the next write (the one being written not counted)."""
        with self._lock:
            return len(self._queue)

    def store(self, events: Iterable[Event], *, now: datetime, debounce: float = 0.0) -> StoreResult:
        """Store one webhook's events, committed before this returns (possibly with other webhooks' events).

        Raises StorageError when the database is unavailable, UnstorableError when it refuses this webhook's
        events.
        """
        mine = _Waiting(delivery(events, now=now, debounce=debounce))
        if not mine.delivery.events:
            return StoreResult()  # nothing to make durable (e.g. only notices, or accounts outside the allow-list)
        with self._lock:
            self._queue.append(mine)
            lead = not self._writing
            self._writing = True
        if not lead:
            mine.wake.wait()  # the leader set our outcome, or handed over to us (we are at the queue's head)
        if not mine.done:
            self._lead()
        if mine.error is not None:
            raise mine.error
        assert mine.result is not None
        return mine.result

    def _lead(self) -> None:
        """Write the queued deliveries (this thread's is the first), wake their requests, hand over or stop."""
        with self._lock:
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        try:
            self._write(batch)
        except BaseException as exc:  # a bug: every waiting request must still wake up, with the error
            for waiting in batch:
                if not waiting.done:
                    waiting.error = exc
            raise
        finally:
            for waiting in batch:
                waiting.wake.set()
            with self._lock:
                if self._queue:
                    self._queue[0].wake.set()  # not done: it leads the next write
                else:
                    self._writing = False

    def _write(self, batch: Sequence[_Waiting]) -> None:
        if self.on_batch is not None:
            self.on_batch(len(batch))
        try:
            results = write_deliveries(self.engine, [waiting.delivery for waiting in batch])
        except _WRITE_ERRORS as exc:
            if len(batch) == 1 or _unreachable(exc):
                error = self._classified(exc)
                for waiting in batch:
                    waiting.error = error
                return
            self._write_one_by_one(batch)
            return
        for waiting, result in zip(batch, results, strict=True):
            waiting.result = result

    def _classified(self, exc: BaseException) -> ChatopsError:
        """StorageError (unavailable) or UnstorableError (refused) for what a write raised."""
        return exc if isinstance(exc, StorageError) else storage_error(self.engine, exc)

    def _write_one_by_one(self, batch: Sequence[_Waiting]) -> None:
        """After a statement failed: each delivery alone, so only the one the database refuses fails."""
        unreachable: ChatopsError | None = None
        for waiting in batch:
            if unreachable is not None:
                waiting.error = unreachable
                continue
            try:
                waiting.result = write_deliveries(self.engine, [waiting.delivery])[0]
            except _WRITE_ERRORS as exc:
                waiting.error = self._classified(exc)
                if _unreachable(exc):
                    unreachable = waiting.error  # the database went away: the rest would only wait to fail


# What a write raises about the database or a value (anything else is a bug, and reaches every waiting request).
# StorageError: the write found the database unusable before it ran a statement (chatops.db.sqlite_file).
_WRITE_ERRORS = (sa.exc.StatementError, StorageError, *PERMANENT_DRIVER_ERRORS)


def _unreachable(exc: BaseException) -> bool:
    """The database is unavailable for every delivery alike: connecting failed (no statement ran), or the write
    found it unusable (StorageError)."""
    if isinstance(exc, StorageError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and exc.statement is None
