"""The inbox worker: claim a conversation, run one turn, commit it, release — until told to stop.

Any number of workers (threads here, processes elsewhere) share one database: the lease in ``claim_conversation``
guarantees one worker per conversation at a time and messages in order, while conversations run in parallel.
What can go wrong, and what happens then (docs/operations.md says it for operators):

- a turn, or its commit, raises anything but StorageError (a bug, a value the database refuses): the attempt is
  counted and the messages wait with exponential backoff; after ``CHATOPS_TURN_MAX_ATTEMPTS`` they are marked
  ``failed`` with the error and the user gets an apology. The thread goes on.
- StorageError (the database is unreachable): an outage, not the message's fault. No attempt is used; the loop
  backs off (:class:`~chatops.engine.supervision.Backoff`) and :class:`DatabaseOutage` logs the outage once.
- BaseException that is not an Exception (SystemExit, KeyboardInterrupt raised by plug-in code): the attempt is
  counted as above, then the thread ends as asked; ``Background`` starts it again.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import sqlalchemy as sa

from chatops.channels.events import OutboundMessage
from chatops.config.settings import Settings
from chatops.db.connect import storage_errors
from chatops.db.inbox import (
    Conversation,
    ConversationChange,
    LeaseLost,
    PendingMessage,
    TurnRecord,
    claim_conversation,
    complete_turn,
    defer_messages,
    pending_messages,
    recent_turns,
    release_conversation,
)
from chatops.db.wakeups import Wakeups
from chatops.engine.flood import FloodControl
from chatops.engine.handoff import expire_handoffs
from chatops.engine.leases import LeaseKeeper
from chatops.engine.supervision import Backoff, DatabaseOutage, Heartbeat
from chatops.engine.turn import FALLBACK_ERROR_TEXT, BotRuntime, handle_turn, user_text_of
from chatops.errors import StorageError
from chatops.logs import log_context
from chatops.text import clean_text

log = logging.getLogger(__name__)

MAX_BACKOFF = timedelta(minutes=5)
HANDOFF_SWEEP = timedelta(seconds=30)  # how often a worker looks for handoffs that timed out
IDLE_POLL_SECONDS = 0.2  # an idle worker looks for work this often without wake-ups (SQLite; PostgreSQL cut off)
NOT_ANSWERED_KINDS = frozenset({"reaction"})  # stored for the record; a reaction is not a question


def worker_name(index: int = 0) -> str:
    """A name unique across hosts and processes, for a worker without a :class:`LeaseKeeper` (``simulate``)."""
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


class Worker:
    """Handles due conversations one turn at a time. Safe to run many, in threads or processes.

    With ``leases`` (one :class:`~chatops.engine.leases.LeaseKeeper` per process) the lease on the conversation
    in a turn is renewed while the turn runs, however long its AI call takes; without it (``simulate``) the lease
    lasts ``CHATOPS_LEASE_SECONDS`` from the claim.
    """

    def __init__(
        self,
        runtime: BotRuntime,
        db: sa.Engine,
        settings: Settings,
        *,
        clock: Callable[[], datetime],
        name: str | None = None,
        on_turn: Callable[[str, float], None] | None = None,
        on_rate_limited: Callable[[int], None] | None = None,
        outage: DatabaseOutage | None = None,
        leases: LeaseKeeper | None = None,
        runtime_source: Callable[[], BotRuntime] | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        self.runtime = runtime
        self.runtime_source = runtime_source  # after a bot reload: the new runtime (chatops.engine.reload)
        self.db = db
        self.settings = settings
        self.clock = clock
        self.name = name or worker_name()
        self.lease = timedelta(seconds=settings.lease_seconds)
        self.on_turn = on_turn
        self.on_rate_limited = on_rate_limited  # told how many messages bot.rate_limit held back (for /metrics)
        self.outage = outage or DatabaseOutage()
        self.leases = leases
        self.wakeups = wakeups
        self.heartbeat = Heartbeat()
        self.flood = FloodControl(settings.rate_limit_storage)  # stages.yaml bot.rate_limit
        self._unreleased: Conversation | None = None  # its release failed (database down): give it back first

    def work_once(self, *, only: int | None = None) -> bool:
        """Claim one due conversation (or conversation ``only``) and run one turn; ``False`` when nothing was due.

        Whatever the turn or its commit raises is handled here (an attempt of its messages, see the module
        docstring). Raises StorageError when the database is unavailable, and whatever claiming or reading the
        conversation raises.
        """
        if self._unreleased is not None:  # a database outage kept the last release from happening
            release_conversation(self.db, self._unreleased, worker_id=self.name)
            self._unreleased = None
        if self.leases is not None and not self.leases.may_claim():
            return False  # another live process holds this one's instance name (chatops.engine.instance_lock)
        conversation = claim_conversation(self.db, worker_id=self.name, now=self.clock(), lease=self.lease, only=only)
        if conversation is None:
            return False
        if self.leases is not None:
            self.leases.hold_turn(conversation.id, self.name, self.heartbeat)
            if conversation.taken_over:
                self.leases.recovered("turn", "expired", 1)
        with log_context(conversation_id=conversation.id):  # every line of the turn names its conversation
            try:
                self._turn(conversation)
            except LeaseLost as exc:
                log.warning("%s", exc)
            finally:
                if self.leases is not None:
                    self.leases.let_go_turn(conversation.id)
                self._release(conversation)
        return True

    def run(self, stop: threading.Event, *, idle_wait: float = IDLE_POLL_SECONDS) -> None:
        """Work until ``stop`` is set; the turn in progress finishes and its lease is released.

        Idle, it waits ``idle_wait`` seconds before looking again, or with ``wakeups`` until new messages are
        announced (at most ``CHATOPS_POLL_SECONDS`` while notifications arrive: :mod:`chatops.db.wakeups`).

        Never raises an Exception: a database outage and a failure outside a turn are retried with exponential
        backoff (the outage is logged once per process, a failure with its traceback). Beats ``heartbeat`` on
        every iteration; a turn may take up to ``CHATOPS_STUCK_SECONDS`` before the thread counts as stuck (and
        its lease is no longer renewed, so another worker takes the conversation over).
        """
        outage = Backoff()
        trouble = Backoff()
        next_sweep = self.clock()
        while not stop.is_set():
            # Past this promise /readyz reports the thread stuck and the lease keeper stops renewing its lease.
            self.heartbeat.beat(within=self.settings.stuck_seconds)
            since = self.wakeups.generation("inbox") if self.wakeups is not None else 0
            try:
                busy = self.work_once()
                # After a successful claim only, so that an outage costs these no extra failed connections.
                if self.runtime_source is not None:
                    self.runtime = self.runtime_source()  # a bot reload (chatops.engine.reload)
                if self.clock() >= next_sweep:  # handoff_timeout (chatops.engine.handoff)
                    next_sweep = self.clock() + HANDOFF_SWEEP
                    self._expire_handoffs()
            except StorageError as exc:
                wait = outage.failed()
                self.outage.down(f"worker {self.name}", exc.message, retry_in=wait)
            except Exception:  # claiming or reading a conversation failed: a bug or a bad row, not an outage
                wait = trouble.failed()
                log.exception("worker %s: unexpected error outside a turn; retry in %.2gs", self.name, wait)
            else:
                outage.succeeded()
                trouble.succeeded()
                self.outage.up()
                wait = 0.0 if busy else idle_wait
                if not busy and self.wakeups is not None:
                    timeout = self.settings.poll_seconds if self.wakeups.listening else idle_wait
                    self.heartbeat.beat(within=timeout)
                    self.wakeups.wait("inbox", since=since, timeout=timeout, stop=stop)
                    continue
            if wait:
                self.heartbeat.beat(within=wait)
                stop.wait(wait)

    def _expire_handoffs(self) -> None:
        """Give the bot back the handed-off conversations whose stage's ``handoff_timeout`` ran out."""
        with storage_errors(self.db):
            expired = expire_handoffs(self.db, self.runtime.bot, now=self.clock())
        for done in expired:
            log.info("conversation %d: handoff timed out; back with the bot at %s", done.conversation_id, done.stage)

    def _release(self, conversation: Conversation) -> None:
        """Give the lease back; when that fails the lease runs out by itself, so the failure is only logged."""
        try:
            release_conversation(self.db, conversation, worker_id=self.name)
        except StorageError as exc:  # the next claim meets the outage and reports it
            # Given back as soon as the database answers again, rather than when the lease runs out.
            self._unreleased = conversation
            log.debug("worker %s: lease of conversation %s not released: %s", self.name, conversation.id, exc)
        except Exception:
            log.exception(
                "worker %s: releasing conversation %s failed; its lease expires within %s",
                self.name,
                conversation.id,
                self.lease,
            )

    def _turn(self, conversation: Conversation) -> None:
        now = self.clock()
        pending = pending_messages(self.db, conversation)
        if not pending or pending[0].available_at > now:
            return  # answered meanwhile, or held back by a retry
        bot = self.runtime.bot.bot
        # Stale means "was already old when Meta delivered it" (a replay after an outage), not "waited in our
        # queue": a backlog of our own, or a turn retried for a while, must still be answered.
        skipped = [
            p
            for p in pending
            if p.received_at - p.message.timestamp > bot.stale_after or p.message.kind in NOT_ANSWERED_KINDS
        ]
        due = [p for p in pending if p not in skipped]
        # Debounce: the first message's window (its available_at) gathers everything that arrived within it.
        batch = (
            [p for p in due if p.received_at <= pending[0].available_at] if self.settings.debounce_seconds else due[:1]
        )
        if not batch:
            if skipped:
                self._commit(conversation, now, answered=[], skipped=skipped, turn=None)
            return
        admitted, slow_down = self.flood.admit(self.runtime.bot, conversation, len(batch))
        if not admitted:  # a flood: stored, never sent to the AI; one polite reply per window
            replies = (slow_down,) if slow_down else ()
            self._commit(conversation, now, answered=[], skipped=skipped + batch, turn=None, replies=replies)
            if self.on_rate_limited is not None:
                self.on_rate_limited(len(batch))
            return
        try:
            history = recent_turns(self.db, conversation.id, limit=max(self.runtime.bot.ai.history, 1))
            started = self.clock()
            result = handle_turn(self.runtime, conversation, [p.message for p in batch], history=history, now=started)
            record = replace(result.record, finished_at=max(self.clock(), started))
            self._commit(
                conversation,
                now,
                answered=batch,
                skipped=skipped,
                turn=record,
                replies=result.replies,
                change=result.change,
                mark_read=batch[-1].message.provider_message_id,
            )
        except StorageError:
            raise  # the database is unavailable (or the lease was lost): not these messages' fault
        except Exception as exc:  # a bug, or a value the database refused: an attempt, then `failed`
            self._failed(conversation, batch, skipped, exc, now)
            return
        except BaseException as exc:  # SystemExit/KeyboardInterrupt from plug-in code: count it, then end as asked
            self._failed(conversation, batch, skipped, exc, now)
            raise
        if self.on_turn is not None:
            self.on_turn("error" if record.error else "ok", (record.finished_at - started).total_seconds())

    def _commit(
        self,
        conversation: Conversation,
        now: datetime,
        *,
        answered: list[PendingMessage],
        skipped: list[PendingMessage],
        turn: TurnRecord | None,
        replies: tuple[OutboundMessage, ...] = (),
        change: ConversationChange | None = None,
        mark_read: str | None = None,
        failed_error: str | None = None,
    ) -> None:
        complete_turn(
            self.db,
            conversation,
            worker_id=self.name,
            now=now,
            lease=self.lease,
            answered=[p.id for p in answered],
            skipped=[p.id for p in skipped],
            turn=turn,
            replies=replies,
            change=change,
            mark_read=mark_read,
            failed_error=failed_error,
        )

    def _failed(
        self,
        conversation: Conversation,
        batch: list[PendingMessage],
        skipped: list[PendingMessage],
        exc: BaseException,
        now: datetime,
    ) -> None:
        """Count an attempt of ``batch``: back off, or after the last attempt mark it failed and apologise.

        Raises StorageError when the database is unavailable (the attempt is then not counted).
        """
        attempts = max(p.attempts for p in batch) + 1
        # The error may quote the very value the database refused: it must be storable itself.
        error = clean_text(f"{type(exc).__name__}: {exc}")[:2000]
        if attempts < self.settings.turn_max_attempts:
            delay = min(timedelta(seconds=2**attempts), MAX_BACKOFF)
            log.warning(
                "turn for conversation %s failed (attempt %d of %d), retry in %s: %s",
                conversation.id,
                attempts,
                self.settings.turn_max_attempts,
                delay,
                error,
                exc_info=exc,
            )
            defer_messages(self.db, [p.id for p in batch], error=error, available_at=now + delay)
            if self.wakeups is not None:  # retried when due, not at the next fallback poll
                self.wakeups.wake("inbox", after=delay.total_seconds())
            if self.on_turn is not None:
                self.on_turn("retried", 0.0)
            return
        log.error(
            "turn for conversation %s failed %d times, giving up: %s", conversation.id, attempts, error, exc_info=exc
        )
        text = FALLBACK_ERROR_TEXT
        turn = TurnRecord(
            started_at=now,
            finished_at=self.clock(),
            stage_before=conversation.stage,
            stage_after=conversation.stage,
            user_text=clean_text(user_text_of([p.message for p in batch])),
            bot_version=self.runtime.bot.version,
            replies=[OutboundMessage(text=text).to_json()],
            error=error,
            state_before=conversation.state,  # the turn gave up: the state stays as it was
            state_after=conversation.state,
        )
        try:
            self._commit(
                conversation,
                now,
                answered=batch,
                skipped=skipped,
                turn=turn,
                replies=(OutboundMessage(text=text),),
                failed_error=error,
            )
        except StorageError:
            raise
        except Exception:  # even the apology cannot be stored: at least stop retrying the messages
            log.exception(
                "conversation %s: the failed turn could not be recorded; marking its messages failed", conversation.id
            )
            self._commit(conversation, now, answered=batch, skipped=skipped, turn=None, failed_error=error)
        if self.on_turn is not None:
            self.on_turn("error", 0.0)
