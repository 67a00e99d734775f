"""The replay corpus: stored conversations with their turns, read from the database or a JSON Lines file.

A corpus file (``chatops export``) holds one conversation per line, each a JSON object::

    {"corpus": "chatops-replay", "version": 1,
     "conversation": {"id", "channel", "account_id", "user_id", "user_name"},
     "turns": [{"id", "started_at", "finished_at", "stage_before", "stage_after", "stage_answered",
                "user_text", "messages": [{"id", "kind", "text", "payload", "timestamp"}],
                "variables", "prompt", "model", "parameters", "intent", "ai_response", "usage",
                "latency_ms", "template_versions", "bot_version", "replies", "error",
                "state_before", "state_after"}]}

docs/replay.md is the reference (every field, and how versions change). Reading the database is read-only: one
``SELECT`` per table, no lock, no write.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from chatops.db.connect import storage_errors
from chatops.db.tables import conversations, inbound_messages, turns
from chatops.errors import ChatopsError

CORPUS_NAME = "chatops-replay"
CORPUS_VERSION = 1
"""The corpus format version. A reader accepts its own version and older ones; a newer file is refused."""


class CorpusError(ChatopsError):
    """A corpus file that cannot be read: not JSON Lines, not a chatops corpus, or a newer version."""


@dataclass(frozen=True)
class CorpusMessage:
    """One inbound message a turn answered (the message id, kind, text, normalised payload, provider time)."""

    id: str
    kind: str
    text: str | None
    payload: dict[str, Any]
    timestamp: datetime


@dataclass(frozen=True)
class CorpusTurn:
    """One recorded turn: what the bot saw (stage, state, messages, provider values) and what it did."""

    id: int
    started_at: datetime
    finished_at: datetime
    stage_before: str | None
    stage_after: str | None
    stage_answered: str | None
    user_text: str | None
    messages: tuple[CorpusMessage, ...]
    variables: dict[str, Any] = field(default_factory=dict)
    prompt: list[dict[str, Any]] | None = None
    model: str | None = None
    parameters: dict[str, Any] | None = None
    intent: str | None = None
    ai_response: str | None = None
    usage: dict[str, Any] | None = None
    latency_ms: float | None = None
    template_versions: dict[str, str] = field(default_factory=dict)
    bot_version: str | None = None
    replies: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    state_before: dict[str, Any] = field(default_factory=dict)
    state_after: dict[str, Any] = field(default_factory=dict)

    @property
    def replayable(self) -> bool:
        """Whether the turn has a trace to re-run: retention clears it (docs/scaling.md), and a turn the worker
        gave up on never had one. Such a turn is not replayed, but its user text and replies stay history."""
        return bool(self.variables)

    @property
    def reply_texts(self) -> tuple[str, ...]:
        """The texts of the replies sent, in order."""
        return tuple(str(reply.get("text") or "") for reply in self.replies)


@dataclass(frozen=True)
class CorpusConversation:
    """A conversation and its turns, oldest first."""

    id: int
    channel: str
    account_id: str
    user_id: str
    user_name: str | None
    turns: tuple[CorpusTurn, ...]


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which conversations to read: filters of ``replay`` and ``export`` (all optional, combined with AND).

    ``since``/``until`` keep the turns started in that window (a conversation with none left is dropped);
    ``stage`` keeps conversations with a turn in that stage (before or answered); ``limit`` keeps the newest N
    conversations; ``sample`` draws N of them at random with ``seed`` (the same seed, the same sample).
    """

    since: datetime | None = None
    until: datetime | None = None
    conversation_ids: tuple[int, ...] = ()
    stage: str | None = None
    channel: str | None = None
    limit: int | None = None
    sample: int | None = None
    seed: int = 0


def read_database(engine: sa.Engine, selection: Selection | None = None) -> list[CorpusConversation]:
    """The selected conversations with their turns and messages, oldest conversation first.

    Only reads (no transaction writes, no lock). Raises StorageError when the database is unavailable.
    """
    selection = selection or Selection()
    c, t, m = conversations.c, turns.c, inbound_messages.c
    with storage_errors(engine), engine.connect() as connection:
        query = sa.select(conversations).order_by(c.id)
        if selection.conversation_ids:
            query = query.where(c.id.in_(selection.conversation_ids))
        if selection.channel:
            query = query.where(c.channel == selection.channel)
        turn_filter = []
        if selection.since is not None:
            turn_filter.append(t.started_at >= selection.since)
        if selection.until is not None:
            turn_filter.append(t.started_at < selection.until)
        having = sa.select(t.conversation_id).where(*turn_filter)
        if selection.stage:
            having = having.where(sa.or_(t.stage_before == selection.stage, t.stage_answered == selection.stage))
        query = query.where(c.id.in_(having))
        rows = connection.execute(query).all()
        rows = _choose(rows, selection)
        ids = [row.id for row in rows]
        turn_rows: dict[int, list[sa.Row[Any]]] = {conversation_id: [] for conversation_id in ids}
        message_rows: dict[int, sa.Row[Any]] = {}
        for chunk in _chunks(ids, 500):
            for row in connection.execute(
                sa.select(turns).where(t.conversation_id.in_(chunk), *turn_filter).order_by(t.conversation_id, t.id)
            ):
                turn_rows[row.conversation_id].append(row)
            for row in connection.execute(
                sa.select(m.id, m.provider_message_id, m.kind, m.text, m.payload, m.provider_timestamp).where(
                    m.conversation_id.in_(chunk), m.turn_id.is_not(None)
                )
            ):
                message_rows[row.id] = row
    return [
        CorpusConversation(
            id=row.id,
            channel=row.channel,
            account_id=row.account_id,
            user_id=row.user_id,
            user_name=row.user_name,
            turns=tuple(_turn(turn, message_rows) for turn in turn_rows[row.id]),
        )
        for row in rows
    ]


def _choose(rows: Sequence[sa.Row[Any]], selection: Selection) -> list[sa.Row[Any]]:
    chosen = list(rows)
    if selection.limit is not None:
        chosen = chosen[-selection.limit :] if selection.limit > 0 else []
    if selection.sample is not None and selection.sample < len(chosen):
        picked = random.Random(selection.seed).sample(range(len(chosen)), selection.sample)
        chosen = [chosen[index] for index in sorted(picked)]
    return chosen


def _chunks(values: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _turn(row: sa.Row[Any], messages: dict[int, sa.Row[Any]]) -> CorpusTurn:
    answered = [messages[i] for i in (row.inbound_ids or ()) if i in messages]
    return CorpusTurn(
        id=row.id,
        started_at=row.started_at,
        finished_at=row.finished_at,
        stage_before=row.stage_before,
        stage_after=row.stage_after,
        stage_answered=row.stage_answered,
        user_text=row.user_text,
        messages=tuple(
            CorpusMessage(
                id=message.provider_message_id,
                kind=message.kind,
                text=message.text,
                payload=dict(message.payload or {}),
                timestamp=message.provider_timestamp,
            )
            for message in answered
        ),
        variables=dict(row.variables or {}),
        prompt=row.prompt,
        model=row.model,
        parameters=row.parameters,
        intent=row.intent,
        ai_response=row.ai_response,
        usage=row.usage,
        latency_ms=row.latency_ms,
        template_versions=dict(row.template_versions or {}),
        bot_version=row.bot_version,
        replies=list(row.replies or []),
        error=row.error,
        state_before=dict(row.state_before or {}),
        state_after=dict(row.state_after or {}),
    )


# JSON Lines ---------------------------------------------------------------------------------------------------

_TURN_TIMES = ("started_at", "finished_at")


def conversation_json(conversation: CorpusConversation) -> dict[str, Any]:
    """One corpus line as a JSON-ready object (times in ISO 8601 with their UTC offset)."""
    return {
        "corpus": CORPUS_NAME,
        "version": CORPUS_VERSION,
        "conversation": {
            "id": conversation.id,
            "channel": conversation.channel,
            "account_id": conversation.account_id,
            "user_id": conversation.user_id,
            "user_name": conversation.user_name,
        },
        "turns": [_turn_json(turn) for turn in conversation.turns],
    }


def _turn_json(turn: CorpusTurn) -> dict[str, Any]:
    values: dict[str, Any] = {name: getattr(turn, name) for name in CorpusTurn.__dataclass_fields__}
    for name in _TURN_TIMES:
        values[name] = values[name].isoformat()
    values["messages"] = [
        {"id": m.id, "kind": m.kind, "text": m.text, "payload": m.payload, "timestamp": m.timestamp.isoformat()}
        for m in turn.messages
    ]
    return values


def write_corpus(out: IO[str], conversations_: Iterable[dict[str, Any]]) -> int:
    """Write corpus lines (from :func:`conversation_json`, maybe redacted) to ``out``; returns how many."""
    count = 0
    for line in conversations_:
        out.write(json.dumps(line, ensure_ascii=False, sort_keys=True, separators=(",", ":")) + "\n")
        count += 1
    return count


def read_corpus(path: Path) -> list[CorpusConversation]:
    """The conversations of a corpus file. Raises CorpusError naming the file and line of the first problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CorpusError(f"cannot read corpus {path}: {exc}") from None
    result = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            result.append(parse_conversation(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CorpusError(
                f"{path}:{number}: not a chatops corpus line: {exc}",
                hint="write corpora with `chatops export --out FILE`; docs/replay.md describes the format",
            ) from None
    return result


def parse_conversation(line: dict[str, Any]) -> CorpusConversation:
    """A corpus line back into a conversation. Raises ValueError, KeyError or TypeError when malformed."""
    if line.get("corpus") != CORPUS_NAME:
        raise ValueError(f"'corpus' is {line.get('corpus')!r}, not {CORPUS_NAME!r}")
    version = line.get("version")
    if not isinstance(version, int) or not 1 <= version <= CORPUS_VERSION:
        raise ValueError(f"corpus version {version!r} is not supported (this chatops reads 1..{CORPUS_VERSION})")
    head = line["conversation"]
    return CorpusConversation(
        id=int(head["id"]),
        channel=str(head["channel"]),
        account_id=str(head["account_id"]),
        user_id=str(head["user_id"]),
        user_name=head.get("user_name"),
        turns=tuple(_parse_turn(turn) for turn in line["turns"]),
    )


def _parse_turn(values: dict[str, Any]) -> CorpusTurn:
    known: dict[str, Any] = {name: values.get(name) for name in CorpusTurn.__dataclass_fields__ if name in values}
    for name in _TURN_TIMES:
        known[name] = datetime.fromisoformat(values[name])
    known["messages"] = tuple(
        CorpusMessage(
            id=str(m["id"]),
            kind=str(m["kind"]),
            text=m.get("text"),
            payload=dict(m.get("payload") or {}),
            timestamp=datetime.fromisoformat(m["timestamp"]),
        )
        for m in values.get("messages") or ()
    )
    for name, empty in (("variables", {}), ("template_versions", {}), ("replies", []), ("state_before", {})):
        known[name] = known.get(name) or empty
    known["state_after"] = known.get("state_after") or {}
    return CorpusTurn(**known)
