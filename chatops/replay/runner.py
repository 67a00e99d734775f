"""Re-run recorded turns through ``handle_turn`` with a candidate bot definition.

Each recorded turn becomes the same call the worker made — the conversation as it was (stage, state, user),
the messages the turn answered, the history before it, and the recorded time as the clock — but with the
candidate's definition, templates and AI client. Nothing is written and nothing is sent: ``handle_turn`` does no
I/O, and replay never builds a sender.

- ``independent`` (default): every turn sees the recorded context, so turns are independent and run in parallel.
- ``chained``: the candidate's own stage, state and replies carry forward within a conversation (turns of one
  conversation in order, conversations in parallel).

Provider values come from the recording (:mod:`.recorded`) unless ``live_providers``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from chatops.ai.protocol import AIClient
from chatops.channels.events import InboundMessage
from chatops.config.bot_schema import BotDefinition
from chatops.db.inbox import Conversation, PastTurn
from chatops.engine.turn import BotRuntime, TurnResult, handle_turn
from chatops.engine.variables import VariableSource
from chatops.replay.corpus import CorpusConversation, CorpusTurn
from chatops.replay.recorded import RecordedValues, recorded_providers
from chatops.templating.providers import ProviderRunner, VariableProvider, build_providers
from chatops.templating.store import TemplateStore

Mode = Literal["independent", "chained"]


@dataclass(frozen=True, kw_only=True)
class TurnSide:
    """One side of a comparison: what a turn answered and where it left the conversation."""

    replies: tuple[str, ...]
    stage_after: str | None
    stage_answered: str | None
    state_after: dict[str, Any]
    intent: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``recorded``/``new`` objects of the JSON report)."""
        return {
            "replies": list(self.replies),
            "stage_after": self.stage_after,
            "stage_answered": self.stage_answered,
            "state_after": self.state_after,
            "intent": self.intent,
            "model": self.model,
            "usage": self.usage,
            "latency_ms": self.latency_ms,
            "error": self.error,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> TurnSide:
        """The inverse of :meth:`to_json` (baselines are stored that way)."""
        return cls(**{**values, "replies": tuple(values.get("replies") or ())})


@dataclass(frozen=True, kw_only=True)
class ReplayedTurn:
    """A recorded turn and what the candidate did with it."""

    conversation_id: int
    turn_id: int
    index: int
    channel: str
    started_at: datetime
    stage_before: str | None
    user_text: str | None
    recorded: TurnSide
    new: TurnSide
    duration_ms: float

    @property
    def key(self) -> str:
        """``<conversation id>:<turn id>``: identifies the turn in reports and baselines."""
        return f"{self.conversation_id}:{self.turn_id}"


@dataclass
class ReplayRun:
    """The turns replayed so far (in corpus order once finished) and whether the run was interrupted."""

    turns: list[ReplayedTurn] = field(default_factory=list)
    total: int = 0
    interrupted: bool = False
    wall_seconds: float = 0.0


def recorded_side(turn: CorpusTurn) -> TurnSide:
    """What the recording says the turn did."""
    return TurnSide(
        replies=turn.reply_texts,
        stage_after=turn.stage_after,
        stage_answered=turn.stage_answered,
        state_after=turn.state_after,
        intent=turn.intent,
        model=turn.model,
        usage=turn.usage,
        latency_ms=turn.latency_ms,
        error=turn.error,
    )


class Replayer:
    """Runs a candidate definition over recorded conversations. Build one per run; ``close()`` it after."""

    def __init__(self, bot: BotDefinition, ai: AIClient, *, live_providers: bool = False, pool_size: int = 16):
        self.bot = bot
        self.values = RecordedValues()
        templates = TemplateStore(bot.templates_dir)
        providers: Sequence[VariableProvider] = (
            build_providers(bot.providers, base_dir=bot.path.parent)
            if live_providers
            else recorded_providers(bot.providers, self.values)
        )
        runner = ProviderRunner(providers, max_workers=max(pool_size, 4))
        self.runtime = BotRuntime(bot, templates, VariableSource(bot, templates, runner), ai)

    def close(self) -> None:
        """Stop the provider pool."""
        self.runtime.variables.runner.close()

    def run(
        self,
        conversations: Sequence[CorpusConversation],
        *,
        mode: Mode = "independent",
        concurrency: int = 8,
        on_turn: Callable[[ReplayedTurn], None] | None = None,
        stop: threading.Event | None = None,
    ) -> ReplayRun:
        """Replay every turn; ``on_turn`` is called (from the calling thread) as each one finishes.

        Ctrl-C (KeyboardInterrupt in the calling thread) or ``stop`` ends the run early: turns not started are
        dropped, and the result holds those that finished, with ``interrupted`` set.
        """
        stop = stop or threading.Event()
        for conversation in conversations:
            for index, turn in enumerate(conversation.turns):
                self.values.put(conversation.id, index, turn.variables)
        run = ReplayRun(total=sum(1 for c in conversations for t in c.turns if t.replayable))
        started = time.perf_counter()
        pool = ThreadPoolExecutor(max_workers=max(concurrency, 1), thread_name_prefix="chatops-replay")
        jobs: set[Future[list[ReplayedTurn]]] = set()
        done_turns: list[ReplayedTurn] = []

        def collect(turn: ReplayedTurn) -> None:
            done_turns.append(turn)
            if on_turn is not None:
                on_turn(turn)

        try:
            if mode == "chained":
                for conversation in conversations:
                    jobs.add(pool.submit(self._chain, conversation, stop))
            else:
                for conversation in conversations:
                    sessions = _session_starts(conversation.turns)
                    for index, turn in enumerate(conversation.turns):
                        if turn.replayable:
                            jobs.add(pool.submit(self._independent, conversation, index, sessions[index]))
            pending = set(jobs)
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                for job in finished:
                    for replayed in job.result():
                        collect(replayed)
                if stop.is_set():
                    run.interrupted = True
                    break
        except KeyboardInterrupt:
            run.interrupted = True
            stop.set()
        finally:
            pool.shutdown(wait=not run.interrupted, cancel_futures=True)
        order = {(c.id, t.id): n for n, (c, t) in enumerate((c, t) for c in conversations for t in c.turns)}
        run.turns = sorted(done_turns, key=lambda t: order[(t.conversation_id, t.turn_id)])
        run.wall_seconds = time.perf_counter() - started
        return run

    # One turn ---------------------------------------------------------------------------------------------------

    def _independent(
        self, conversation: CorpusConversation, index: int, session: datetime | None
    ) -> list[ReplayedTurn]:
        turn = conversation.turns[index]
        window = max(self.bot.ai.history, 1)
        history = [_past(t) for t in conversation.turns[:index]][-window:]
        state = _conversation(conversation, index, turn.stage_before, turn.state_before, session)
        side, _, duration = self._turn(state, conversation, turn, history)
        return [_replayed(conversation, index, turn, side, duration)]

    def _chain(self, conversation: CorpusConversation, stop: threading.Event) -> list[ReplayedTurn]:
        if not conversation.turns:
            return []
        first = conversation.turns[0]
        window = max(self.bot.ai.history, 1)
        stage, state = first.stage_before, first.state_before
        session = _session_starts(conversation.turns)[0]
        history: list[PastTurn] = []
        done = []
        for index, turn in enumerate(conversation.turns):
            if stop.is_set():
                break
            if not turn.replayable:  # no trace: the recording goes on as it was
                stage, state = turn.stage_after, turn.state_after
                history.append(_past(turn))
                continue
            current = _conversation(conversation, index, stage, state, session)
            side, result, duration = self._turn(current, conversation, turn, history[-window:])
            done.append(_replayed(conversation, index, turn, side, duration))
            if result is not None:
                stage, state = result.change.stage, result.change.state
                session = result.change.session_started_at
            history.append(PastTurn(turn.user_text, side.replies, turn.finished_at))
        return done

    def _turn(
        self, conversation: Conversation, recorded: CorpusConversation, turn: CorpusTurn, history: list[PastTurn]
    ) -> tuple[TurnSide, TurnResult | None, float]:
        started = time.perf_counter()
        try:
            result = handle_turn(
                self.runtime, conversation, _messages(recorded, turn), history=history, now=turn.started_at
            )
        except Exception as exc:  # a bug in the candidate's code path: shown on the turn, the run goes on
            duration = (time.perf_counter() - started) * 1000
            side = TurnSide(
                replies=(),
                stage_after=None,
                stage_answered=None,
                state_after={},
                error=f"{type(exc).__name__}: {exc}",
            )
            return side, None, duration
        record = result.record
        side = TurnSide(
            replies=tuple(reply.text or "" for reply in result.replies),
            stage_after=record.stage_after,
            stage_answered=record.stage_answered,
            state_after=dict(record.state_after),
            intent=record.intent,
            model=record.model,
            usage=record.usage,
            latency_ms=record.latency_ms,
            error=record.error,
        )
        return side, result, (time.perf_counter() - started) * 1000


def _replayed(
    conversation: CorpusConversation, index: int, turn: CorpusTurn, new: TurnSide, duration: float
) -> ReplayedTurn:
    return ReplayedTurn(
        conversation_id=conversation.id,
        turn_id=turn.id,
        index=index,
        channel=conversation.channel,
        started_at=turn.started_at,
        stage_before=turn.stage_before,
        user_text=turn.user_text,
        recorded=recorded_side(turn),
        new=new,
        duration_ms=round(duration, 3),
    )


def _past(turn: CorpusTurn) -> PastTurn:
    return PastTurn(turn.user_text, turn.reply_texts, turn.finished_at)


def _session_starts(turns: Sequence[CorpusTurn]) -> list[datetime | None]:
    """When each turn's session began, as far as the recording shows (a turn with no stage before starts one)."""
    starts: list[datetime | None] = []
    current: datetime | None = None
    for turn in turns:
        if turn.stage_before is None:
            current = turn.started_at
        starts.append(current)
    return starts


def _conversation(
    conversation: CorpusConversation,
    index: int,
    stage: str | None,
    state: dict[str, Any],
    session: datetime | None,
) -> Conversation:
    turn = conversation.turns[index]
    return Conversation(
        id=conversation.id,
        channel=conversation.channel,
        account_id=conversation.account_id,
        user_id=conversation.user_id,
        user_name=conversation.user_name,
        stage=stage,
        state=dict(state),
        mode="bot",
        turn_count=index,
        session_started_at=session,
        last_inbound_at=turn.messages[-1].timestamp if turn.messages else turn.started_at,
    )


def _messages(conversation: CorpusConversation, turn: CorpusTurn) -> list[InboundMessage]:
    """The messages the turn answered; a turn recorded without them (a failed turn) gets one from its text."""
    common: dict[str, Any] = {
        "channel": conversation.channel,
        "account_id": conversation.account_id,
        "user_id": conversation.user_id,
        "user_name": conversation.user_name,
    }
    if not turn.messages:
        return [
            InboundMessage(
                **common,
                provider_message_id=f"replay-{turn.id}",
                kind="text",
                timestamp=turn.started_at,
                text=turn.user_text,
            )
        ]
    return [
        InboundMessage(
            **common,
            provider_message_id=message.id,
            kind=message.kind,  # type: ignore[arg-type]  # a stored kind is one of InboundKind
            timestamp=message.timestamp,
            text=message.text,
            payload=dict(message.payload),
        )
        for message in turn.messages
    ]
