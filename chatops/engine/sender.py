"""The outbox sender: delivers pending outbound rows through the Graph API, per conversation in order.

One batch (:meth:`OutboxSender.send_due`) claims due rows, at most one per conversation (see
:func:`~chatops.db.outbox.claim_outbound`), and sends them on a small thread pool; :meth:`OutboxSender.run` loops
over batches until told to stop. What happens to a row after its request is decided here:

- accepted: ``sent`` with the provider id; on WhatsApp the answered message is then marked read (best effort);
- transient error (throttling, 5xx, timeout): back to ``pending`` after exponential backoff with jitter
  (:class:`RetryPolicy`), ``failed`` once the attempts are used up;
- permanent error: ``failed`` with the Graph error code and reason;
- code 190 (token invalid or expired): the row waits without using an attempt, the channel is paused and
  reported by :meth:`OutboxSender.problems` until the token source yields a different token;
- outside the 24-hour customer-service window: never attempted free-form; WhatsApp sends the configured
  template instead, otherwise ``failed``;
- the message cannot be encoded or a value cannot be stored (a data error): ``failed`` with the error at once;
- anything else raised while sending (a bug): logged with its traceback and retried like a transient error,
  ``failed`` once the attempts are used up. Nothing a row raises ends the sender's thread; a database outage
  (StorageError) pauses the loop with exponential backoff and is logged once (:class:`DatabaseOutage`).

docs/sending.md describes the policy for operators.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import random as _uniform
from types import TracebackType

import sqlalchemy as sa
from pydantic import SecretStr

from chatops.channels.events import CHANNELS, Channel, OutboundMessage
from chatops.channels.graph import GraphClient, is_token_error
from chatops.channels.messenger import messenger_request
from chatops.channels.whatsapp import whatsapp_request
from chatops.config.settings import Settings, load_settings
from chatops.db.connect import is_permanent, storage_error
from chatops.db.leases import recover_expired_sends
from chatops.db.outbox import (
    OutboundRow,
    claim_outbound,
    count_pending,
    mark_failed,
    mark_sent,
    release_outbound,
    schedule_retry,
)
from chatops.db.wakeups import Wakeups
from chatops.engine.leases import LeaseKeeper
from chatops.engine.supervision import Backoff, DatabaseOutage, Heartbeat
from chatops.engine.window import UNRENDERED_PARAMS, window_message
from chatops.errors import ChannelError, ChatopsError, ConfigError, GraphAPIError, StorageError, UnstorableError
from chatops.logs import log_context
from chatops.text import clean_text

logger = logging.getLogger(__name__)

MARK_SENT_ATTEMPTS = 10  # about 30 s of retries (0.25 s doubling, capped at 5 s)

CUSTOMER_SERVICE_WINDOW = timedelta(hours=24)
OUTSIDE_WINDOW_ERROR = "outside the 24-hour customer-service window"
DEFAULT_BATCH_SIZE = 32
TOKEN_VARIABLES: dict[Channel, str] = {
    "whatsapp": "CHATOPS_WHATSAPP_ACCESS_TOKEN",
    "messenger": "CHATOPS_MESSENGER_PAGE_TOKEN",
}

TokenSource = Callable[[Channel], str | None]
OnSend = Callable[[Channel, str, int | None], None]
"""Told (channel, outcome, Graph error code) for every row the sender finishes with: ``sent``, ``retry`` (sent again
later), ``failed`` or ``paused`` (the token was refused); for ``/metrics``."""
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for transient send errors: ``base * factor**(attempt-1)`` seconds, capped.

    The wait is "equal jitter": half of it fixed, half random, so that a burst of throttled messages does not
    come back in one burst. A ``Retry-After`` longer than that wins. After ``max_attempts`` the row fails.
    """

    base: float = 1.0
    factor: float = 2.0
    cap: float = 300.0
    max_attempts: int = 8

    def delay(self, attempt: int, *, jitter: float, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1 for the first); ``jitter`` is uniform in [0, 1]."""
        ceiling = min(self.cap, self.base * self.factor ** max(attempt - 1, 0))
        wait_seconds = ceiling * (0.5 + 0.5 * jitter)
        if retry_after is not None and retry_after > wait_seconds:
            return retry_after
        return wait_seconds


def settings_token_source(channel: Channel) -> str | None:
    """The channel's token as the environment and ``.env`` say now (re-read on every call)."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        logger.warning("cannot re-read the %s token: %s", channel, exc)
        return None
    return _secret(settings.whatsapp_access_token if channel == "whatsapp" else settings.messenger_page_token)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _ChannelState:
    """What the sender knows about one channel's credentials. Guarded by ``OutboxSender._lock``."""

    def __init__(self, token: str | None) -> None:
        self.token = token
        self.refused: str | None = None  # the token Meta refused with code 190; sending is paused while set
        self.next_check: datetime | None = None  # when to ask the token source again (None: at once)
        self.waiting = 0  # pending rows while the token is missing, for problems()

    @property
    def sendable(self) -> bool:
        return self.token is not None and self.refused is None


class OutboxSender:
    """Delivers the outbox through ``graph``; one per process (several processes may share PostgreSQL).

    ``template`` is the approved WhatsApp template (kind ``template``) sent instead of a free-form message when
    the 24-hour window is closed; ``template_source``, when given, is asked for it at each such send instead, so a
    bot reload (stages.yaml ``whatsapp_template``) takes effect without a restart. ``clock`` and ``random``
    (jitter, uniform in [0, 1)) are injectable for tests; ``token_source`` re-reads a channel's token while the
    channel is paused or has none (default: the environment and ``.env``), every ``token_check_interval`` seconds.
    ``concurrency`` threads send rows of different conversations at once; ``on_send`` is told how each row ended
    (:data:`OnSend`). Call :meth:`close` (or use ``with``) to stop the thread pool.
    """

    def __init__(
        self,
        settings: Settings,
        engine: sa.Engine,
        graph: GraphClient,
        *,
        template: OutboundMessage | None = None,
        template_source: Callable[[], OutboundMessage | None] | None = None,
        clock: Clock = _utc_now,
        random: Callable[[], float] = _uniform,
        token_source: TokenSource = settings_token_source,
        policy: RetryPolicy = RetryPolicy(),
        concurrency: int = 4,
        token_check_interval: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        outage: DatabaseOutage | None = None,
        leases: LeaseKeeper | None = None,
        on_send: OnSend | None = None,
        wakeups: Wakeups | None = None,
    ) -> None:
        if template is not None and (template.kind != "template" or not template.template_name):
            raise ConfigError(
                "the sender's out-of-window message must be an approved WhatsApp template",
                hint="set whatsapp_template: {name: …, language: …} in stages.yaml",
            )
        self._engine = engine
        self._graph = graph
        self._template_source = template_source or (lambda: template)
        self._clock = clock
        self._random = random
        self._token_source = token_source
        self._policy = policy
        self._token_check = timedelta(seconds=token_check_interval)
        self._lease = timedelta(seconds=settings.lease_seconds)
        self._stuck_after = settings.stuck_seconds
        self._leases = leases
        self._holder = leases.holder("sender") if leases is not None else None
        self._sleep = sleep
        self._lock = threading.Lock()
        self._channels: dict[Channel, _ChannelState] = {
            "whatsapp": _ChannelState(_secret(settings.whatsapp_access_token)),
            "messenger": _ChannelState(_secret(settings.messenger_page_token)),
        }
        self._pool = ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix="chatops-sender")
        self._outage = outage or DatabaseOutage()
        self._wakeups = wakeups
        self._fallback_poll = settings.poll_seconds
        self.heartbeat = Heartbeat()
        self._on_send = on_send

    def __enter__(self) -> OutboxSender:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Wait for sends in flight and stop the thread pool."""
        self._pool.shutdown(wait=True)

    # Public surface ---------------------------------------------------------------------------------------------

    def send_due(self, *, limit: int = DEFAULT_BATCH_SIZE) -> int:
        """Claim up to ``limit`` due rows and deliver them; returns how many were claimed (0: nothing was due).

        Writes each row's outcome (see the module docstring). Raises SQLAlchemy errors when the database fails;
        rows then left ``sending`` go back to the queue when their lease runs out
        (:func:`~chatops.db.leases.recover_expired_sends`).
        """
        if self._leases is not None and not self._leases.may_claim():
            return 0  # another live process holds this one's instance name (chatops.engine.instance_lock)
        now = self._clock()
        self._check_tokens(now)
        with self._lock:
            channels = [name for name, state in self._channels.items() if state.sendable]
        if not channels:
            return 0
        rows = claim_outbound(
            self._engine, now=now, limit=limit, channels=channels, holder=self._holder, lease=self._lease
        )
        if self._leases is not None and self._holder is not None:
            self._leases.hold_sends([row.id for row in rows], self._holder, self.heartbeat)
        if len(rows) == 1:
            self._deliver(rows[0])
        elif rows:
            # Each row is a different conversation, so order between them does not matter.
            futures: list[Future[None]] = [self._pool.submit(self._deliver, row) for row in rows]
            wait(futures)
            for future in futures:
                future.result()  # re-raise the first failure, after every row has finished
        return len(rows)

    def run(self, stop: threading.Event, *, poll_interval: float = 1.0, limit: int = DEFAULT_BATCH_SIZE) -> None:
        """Send batches until ``stop`` is set; a batch in flight is finished first.

        Waits ``poll_interval`` seconds when nothing was due, or with ``wakeups`` until new replies are announced
        (at most ``CHATOPS_POLL_SECONDS`` while notifications arrive: :mod:`chatops.db.wakeups`). Every
        ``CHATOPS_LEASE_SECONDS / 4`` puts back in the queue the rows whose send lease ran out (their sender died or
        lost the database). Never raises an Exception: a database outage is logged once (per process) and retried
        with exponential backoff, any other failure is logged (with its traceback unless it is one of ours) and
        retried with backoff too. Beats ``heartbeat`` on every iteration.
        """
        last_recovery: datetime | None = None
        sweep_every = self._lease / 4
        outage = Backoff()
        trouble = Backoff()
        while not stop.is_set():
            # Past this promise /readyz reports the sender stuck and its send leases are no longer renewed.
            self.heartbeat.beat(within=self._stuck_after)
            handled = 0
            since = self._wakeups.generation("outbox") if self._wakeups is not None else 0
            try:
                now = self._clock()
                if last_recovery is None or now - last_recovery >= sweep_every:
                    keep = self._leases.held_sends() if self._leases is not None else set()
                    recovered = recover_expired_sends(self._engine, now=now, lease=self._lease, keep=keep)
                    if recovered:
                        logger.warning(
                            "%d outbound message(s) were left sending by a stopped sender and will be sent again "
                            "(a user may receive one of them twice)",
                            recovered,
                        )
                        if self._leases is not None:
                            self._leases.recovered("send", "expired", recovered)
                    last_recovery = now
                handled = self.send_due(limit=limit)
            except Exception as exc:
                error = storage_error(self._engine, exc) if isinstance(exc, sa.exc.SQLAlchemyError) else exc
                if isinstance(error, StorageError):
                    wait = outage.failed()
                    self._outage.down("the sender", error.message, retry_in=wait)
                else:
                    wait = trouble.failed()
                    logger.error(
                        "sender: %s; retry in %.2gs",
                        error,
                        wait,
                        exc_info=None if isinstance(error, ChatopsError) else error,
                    )
            else:
                outage.succeeded()
                trouble.succeeded()
                self._outage.up()
                wait = 0.0 if handled else poll_interval
                if not handled and self._wakeups is not None:
                    timeout = min(self._fallback_poll, sweep_every.total_seconds())
                    timeout = timeout if self._wakeups.listening else poll_interval
                    self.heartbeat.beat(within=timeout)
                    self._wakeups.wait("outbox", since=since, timeout=timeout, stop=stop)
                    continue
            if wait:
                self.heartbeat.beat(within=wait)
                stop.wait(wait)

    def problems(self) -> list[str]:
        """Why some messages cannot be sent now (for ``/readyz`` and the log); empty when all is well."""
        problems = []
        with self._lock:
            for channel, state in self._channels.items():
                variable = TOKEN_VARIABLES[channel]
                if state.refused is not None:
                    problems.append(
                        f"{channel}: sending is paused: the Graph API refused {variable} (code 190, invalid or "
                        f"expired token); set a new token in {variable} (environment or .env) and sending resumes"
                    )
        return problems

    def warnings(self) -> list[str]:
        """Rows waiting for a channel that has no token (disabled here): data, not a fault, so ``/readyz`` stays 200."""
        with self._lock:
            return [
                f"{channel}: {state.waiting} outbound message(s) wait: set {TOKEN_VARIABLES[channel]} to send them"
                for channel, state in self._channels.items()
                if state.token is None and state.refused is None and state.waiting
            ]

    # One row ----------------------------------------------------------------------------------------------------

    def _deliver(self, row: OutboundRow) -> None:
        """Send one claimed row and record the outcome; whatever the row raises becomes its outcome.

        Raises StorageError when the database is unavailable (the row stays ``sending`` and is recovered later),
        and re-raises a BaseException that is not an Exception after recording the attempt.
        """
        self.heartbeat.beat(within=self._stuck_after)
        with log_context(conversation_id=row.conversation_id):  # every line of the send names its conversation
            try:
                self._deliver_row(row)
            except sa.exc.SQLAlchemyError as exc:
                error = storage_error(self._engine, exc)
                if not isinstance(error, UnstorableError):
                    raise error from None
                self._unexpected(row, error)
            except Exception as exc:
                self._unexpected(row, exc)
            except BaseException as exc:  # SystemExit/KeyboardInterrupt: record the attempt, then end as asked
                self._unexpected(row, exc)
                raise
            finally:
                if self._leases is not None:  # a row left `sending` now runs out of lease and is sent again
                    self._leases.let_go_send(row.id)

    def _unexpected(self, row: OutboundRow, exc: BaseException) -> None:
        """A data error fails the row at once; anything else uses up an attempt (retried, then failed)."""
        now = self._clock()
        error = clean_text(f"{type(exc).__name__}: {exc}")[:2000]
        if isinstance(exc, UnicodeError | UnstorableError) or row.attempts >= self._policy.max_attempts:
            logger.error("outbound %d failed (attempt %d): %s", row.id, row.attempts, error, exc_info=exc)
            mark_failed(self._engine, row.id, error_code=None, error=error, now=now)
            self._count(row, "failed")
            return
        delay = self._policy.delay(row.attempts, jitter=self._random())
        logger.error(
            "outbound %d: attempt %d of %d raised, retry in %.1fs: %s",
            row.id,
            row.attempts,
            self._policy.max_attempts,
            delay,
            error,
            exc_info=exc,
        )
        schedule_retry(
            self._engine, row.id, next_attempt_at=now + timedelta(seconds=delay), error_code=None, error=error, now=now
        )
        self._count(row, "retry")
        self._retry_due(delay)

    def _retry_due(self, delay: float) -> None:
        """Wake this sender when a retry falls due, rather than at the next fallback poll."""
        if self._wakeups is not None:
            self._wakeups.wake("outbox", after=delay)

    def _deliver_row(self, row: OutboundRow) -> None:
        with self._lock:
            state = self._channels[row.channel]
            token = state.token if state.sendable else None
        if token is None:  # paused by another row of this batch: wait without using an attempt
            release_outbound(self._engine, row.id, now=self._clock())
            return
        message = row.body
        if message.kind != "template" and self._outside_window(row):
            template = self._template_source()
            if row.channel != "whatsapp" or template is None:
                logger.info("outbound %d not sent: %s", row.id, OUTSIDE_WINDOW_ERROR)
                mark_failed(self._engine, row.id, error_code=None, error=OUTSIDE_WINDOW_ERROR, now=self._clock())
                self._count(row, "failed")
                return
            window = window_message(template, row.body)
            if window is None:
                error = f"{OUTSIDE_WINDOW_ERROR}; {UNRENDERED_PARAMS}"
                logger.warning("outbound %d not sent: %s", row.id, error)
                mark_failed(self._engine, row.id, error_code=None, error=error, now=self._clock())
                self._count(row, "failed")
                return
            logger.info(
                "outbound %d: %s, sending template %r instead",
                row.id,
                OUTSIDE_WINDOW_ERROR,
                template.template_name,
            )
            message = window
        try:
            provider_id = self._send(row, message, token)
        except GraphAPIError as exc:
            self._record_error(row, token, exc)
            return
        except ChannelError as exc:  # the request builder refused the message: retrying cannot help
            mark_failed(self._engine, row.id, error_code=None, error=clean_text(exc.message), now=self._clock())
            self._count(row, "failed")
            return
        self._count(row, "sent")  # Meta has it, whether or not recording it works
        self._record_sent(row, clean_text(provider_id))
        if row.channel == "whatsapp" and row.reply_to:
            try:
                self._graph.mark_whatsapp_read(row.account_id, token, row.reply_to)
            except GraphAPIError as exc:
                logger.warning("outbound %d sent, but marking %s read failed: %s", row.id, row.reply_to, exc)

    def _record_sent(self, row: OutboundRow, provider_id: str) -> None:
        """Store that Meta accepted the row, retrying through a short database outage.

        Meta already has the message: giving up here leaves the row ``sending`` and it is sent again when its lease
        runs out (a duplicate the user sees), so a few seconds of retrying are worth it (the lease is renewed
        meanwhile while the database lets it).
        """
        delay = 0.25
        for attempt in range(1, MARK_SENT_ATTEMPTS + 1):
            try:
                mark_sent(self._engine, row.id, provider_message_id=provider_id, now=self._clock())
                return
            except sa.exc.SQLAlchemyError as exc:
                if is_permanent(exc):  # the id itself is refused (too long): record the send without it
                    logger.error(
                        "outbound %d was accepted by Meta, but its message id cannot be stored (%s); recorded as "
                        "sent without it (delivery reports for it will not match)",
                        row.id,
                        storage_error(self._engine, exc),
                    )
                    mark_sent(self._engine, row.id, provider_message_id=None, now=self._clock())
                    return
                if attempt == MARK_SENT_ATTEMPTS:
                    logger.error(
                        "outbound %d was accepted by Meta as %s but could not be recorded (%s); it will be sent "
                        "again when its lease runs out",
                        row.id,
                        provider_id,
                        storage_error(self._engine, exc),
                    )
                    return
                self._sleep(delay)
                delay = min(delay * 2, 5.0)

    def _send(self, row: OutboundRow, message: OutboundMessage, token: str) -> str:
        if row.channel == "whatsapp":
            return self._graph.send_whatsapp(row.account_id, token, whatsapp_request(row.user_id, message))
        return self._graph.send_messenger(token, messenger_request(row.user_id, message))

    def _outside_window(self, row: OutboundRow) -> bool:
        last = row.last_inbound_at
        return last is None or self._clock() - last > CUSTOMER_SERVICE_WINDOW

    def _record_error(self, row: OutboundRow, token: str, exc: GraphAPIError) -> None:
        now = self._clock()
        if is_token_error(exc):
            self._pause(row.channel, token, now)
            release_outbound(self._engine, row.id, now=now, error_code=exc.code, error=clean_text(exc.message))
            self._count(row, "paused", exc.code)
        elif exc.transient and row.attempts < self._policy.max_attempts:
            delay = self._policy.delay(row.attempts, jitter=self._random(), retry_after=exc.retry_after)
            logger.info("outbound %d: attempt %d failed, retry in %.1fs: %s", row.id, row.attempts, delay, exc)
            schedule_retry(
                self._engine,
                row.id,
                next_attempt_at=now + timedelta(seconds=delay),
                error_code=exc.code,
                error=clean_text(exc.message),
                now=now,
            )
            self._count(row, "retry", exc.code)
            self._retry_due(delay)
        else:
            reason = exc.message if not exc.transient else f"gave up after {row.attempts} attempts: {exc.message}"
            logger.warning("outbound %d failed: %s", row.id, reason)
            mark_failed(self._engine, row.id, error_code=exc.code, error=clean_text(reason), now=now)
            self._count(row, "failed", exc.code)

    def _count(self, row: OutboundRow, outcome: str, error_code: int | None = None) -> None:
        if self._on_send is not None:
            self._on_send(row.channel, outcome, error_code)

    # Channel credentials ----------------------------------------------------------------------------------------

    def _pause(self, channel: Channel, token: str, now: datetime) -> None:
        with self._lock:
            state = self._channels[channel]
            if state.token != token or state.refused is not None:
                return  # already paused, or the token was replaced while this request was in flight
            state.refused = token
            state.next_check = now + self._token_check
        logger.error(
            "%s: the Graph API refused %s (code 190, invalid or expired token): sending on %s is paused until the "
            "token is replaced",
            channel,
            TOKEN_VARIABLES[channel],
            channel,
        )

    def _check_tokens(self, now: datetime) -> None:
        """Ask the token source again for channels that are paused or have no token, when their check is due."""
        for channel in CHANNELS:
            with self._lock:
                state = self._channels[channel]
                due = not state.sendable and (state.next_check is None or now >= state.next_check)
                refused = state.refused
            if not due:
                continue
            token = self._token_source(channel)
            usable = token is not None and token != refused
            waiting = 0
            if not usable and refused is None:
                waiting = count_pending(self._engine, channels=[channel])[channel]
            with self._lock:
                state.next_check = now + self._token_check
                state.waiting = waiting
                if usable:
                    state.token = token
                    state.refused = None
            if usable and refused is not None:
                logger.info("%s: a new token is set, sending resumes", channel)
            elif usable:
                logger.info("%s: %s is set, sending starts", channel, TOKEN_VARIABLES[channel])


def _secret(value: SecretStr | None) -> str | None:
    return value.get_secret_value() if value is not None else None
