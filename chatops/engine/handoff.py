"""The human side of a handoff: an operator's message, pausing the bot, handing a conversation back, timeouts.

The admin API and ``chatops conversations`` call these functions; nothing else changes a conversation's mode
besides the worker's turn (a ``handoff: true`` stage sets ``human``).

Modes: ``bot`` (the worker answers), ``human`` (a handoff stage gave it to a person) and ``paused`` (an operator
stopped the bot). The worker claims only ``bot`` conversations, so while a person has one its inbound messages
are stored and stay ``pending``.

Hand-back: the conversation returns to ``bot`` mode at the chosen stage (default: the bot's ``start``). The
messages that arrived while a person had it are marked ``skipped`` — the operator has read them, and answering a
backlog at once would flood the user — except on a timeout (nobody answered), where the newest one stays pending
so the bot answers it, once. The next message the user sends is answered as usual.

24-hour window: an operator's free-form message is only accepted within 24 hours of the user's last message
(:class:`WindowClosedError` otherwise); the configured ``whatsapp_template`` may be sent at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from chatops.channels.events import OutboundMessage
from chatops.config.bot_schema import BotDefinition
from chatops.db.conversations import get_conversation
from chatops.db.tables import conversations, inbound_messages, outbound_messages
from chatops.db.wakeups import announce
from chatops.errors import ChatopsError, TemplateError
from chatops.templating.builtin import user_variables
from chatops.templating.providers import UserInfo
from chatops.templating.sandbox import InlineTemplate
from chatops.text import clean_text

WINDOW = timedelta(hours=24)
MAX_OPERATOR_TEXT = 4096
ARRIVED_DURING_HANDOFF = "arrived while a person had the conversation; not answered by the bot"


class WindowClosedError(ChatopsError):
    """The 24-hour customer-service window is closed: only a template message may be sent."""


class HandoffError(ChatopsError):
    """An operator action that cannot be done (no template configured, unknown stage …)."""


@dataclass(frozen=True)
class HandBack:
    """What a hand-back did: the stage the bot resumes at and how many waiting messages it skipped."""

    conversation_id: int
    stage: str
    skipped: int
    kept: int


def window_closes_at(last_inbound_at: datetime | None) -> datetime | None:
    """When the customer-service window closes (None: the user never wrote, so it never opened)."""
    return last_inbound_at + WINDOW if last_inbound_at is not None else None


def send_operator_message(
    db: sa.Engine,
    bot: BotDefinition,
    conversation_id: int,
    *,
    operator: str,
    now: datetime,
    text: str | None = None,
    template: bool = False,
) -> int:
    """Queue an operator's message in the outbox (the sender delivers it in order); returns its outbound id.

    ``template`` sends the bot's ``whatsapp_template`` (its params rendered with the user and the static
    variables) instead of ``text``. The conversation goes to ``human`` mode if the bot had it (a person answers
    now) and records ``last_operator_at``. Raises ConversationNotFoundError, WindowClosedError (free text outside
    the window), HandoffError (no template configured or it fails to render; no text).
    """
    with db.begin() as connection:
        row = get_conversation(connection, conversation_id)
        if template:
            message = _template_message(bot, row)
        else:
            if not text or not text.strip():
                raise HandoffError("an operator message needs text", hint='send {"text": "…"} or {"template": true}')
            closes = window_closes_at(row["last_inbound_at"])
            if closes is None or now >= closes:
                since = f"closed at {closes.isoformat(timespec='minutes')}" if closes else "never opened"
                raise WindowClosedError(
                    f"the 24-hour customer-service window {since}: a free-form message cannot be sent",
                    hint='send the approved template instead (API: {"template": true}; CLI: --template); '
                    "the window opens again when the user writes",
                )
            message = OutboundMessage(text=clean_text(text))
        outbound_id = connection.execute(
            sa.insert(outbound_messages)
            .values(
                conversation_id=conversation_id,
                body=message.to_json(),
                status="pending",
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
                sent_by=operator,
            )
            .returning(outbound_messages.c.id)
        ).scalar_one()
        c = conversations.c
        connection.execute(
            sa.update(conversations)
            .where(c.id == conversation_id)
            .values(
                mode=sa.case((c.mode == "bot", "human"), else_=c.mode),
                handoff_at=sa.func.coalesce(c.handoff_at, now),
                last_operator_at=now,
                updated_at=now,
            )
        )
    announce(db, "outbox")  # the sender takes it at once instead of at its next fallback poll
    return int(outbound_id)


def _template_message(bot: BotDefinition, row: dict[str, object]) -> OutboundMessage:
    spec = bot.whatsapp_template
    if row["channel"] != "whatsapp":
        raise HandoffError(
            "template messages are a WhatsApp feature",
            hint="on Messenger answer within 24 hours of the user's last message",
        )
    if spec is None:
        raise HandoffError(
            "this bot has no whatsapp_template", hint="declare one in stages.yaml (docs/sending.md), then reload"
        )
    user = UserInfo(id=str(row["user_id"]), channel="whatsapp", name=row["user_name"])  # type: ignore[arg-type]
    values = {**bot.variables, "user": user_variables(user, reveal_phone=False)}
    try:
        params = tuple(
            clean_text(InlineTemplate(source, label=f"whatsapp_template params[{index}]").render(values))
            for index, source in enumerate(spec.params)
        )
    except TemplateError as exc:
        raise HandoffError(f"the whatsapp_template params cannot be rendered here: {exc.message}") from None
    return OutboundMessage(
        kind="template", template_name=spec.name, template_language=spec.language, template_params=params
    )


def pause(db: sa.Engine, conversation_id: int, *, now: datetime) -> None:
    """Stop the bot for this conversation (mode ``paused``) until it is handed back.

    Raises ConversationNotFoundError.
    """
    with db.begin() as connection:
        get_conversation(connection, conversation_id)
        c = conversations.c
        connection.execute(
            sa.update(conversations)
            .where(c.id == conversation_id)
            .values(mode="paused", handoff_at=sa.func.coalesce(c.handoff_at, now), updated_at=now)
        )


def hand_back(
    db: sa.Engine | sa.Connection,
    bot: BotDefinition,
    conversation_id: int,
    *,
    now: datetime,
    stage: str | None = None,
    answer_latest: bool = False,
) -> HandBack:
    """Give the conversation back to the bot at ``stage`` (default: the bot's start); see the module docstring.

    Raises ConversationNotFoundError, HandoffError for an unknown stage or a stage that hands off again.
    """
    target = stage or bot.bot.start
    if target not in bot.stages:
        raise HandoffError(f"unknown stage {target!r}", hint=f"one of: {', '.join(bot.stages)}")
    if bot.stages[target].handoff:
        raise HandoffError(f"stage {target!r} hands the conversation to a person again", hint="choose another stage")
    if isinstance(db, sa.Engine):
        with db.begin() as connection:
            result = hand_back(connection, bot, conversation_id, now=now, stage=target, answer_latest=answer_latest)
        if result.kept:
            announce(db, "inbox")  # the message kept for the bot is answered at once
        return result
    connection = db
    get_conversation(connection, conversation_id)
    i = inbound_messages.c
    waiting = [
        row.id
        for row in connection.execute(
            sa.select(i.id).where(i.conversation_id == conversation_id, i.status == "pending").order_by(i.id)
        )
    ]
    kept = waiting[-1:] if answer_latest else []
    skipped = [ident for ident in waiting if ident not in kept]
    if skipped:
        connection.execute(
            sa.update(inbound_messages).where(i.id.in_(skipped)).values(status="skipped", error=ARRIVED_DURING_HANDOFF)
        )
    c = conversations.c
    connection.execute(
        sa.update(conversations)
        .where(c.id == conversation_id)
        .values(mode="bot", stage=target, handoff_at=None, updated_at=now)
    )
    return HandBack(conversation_id, target, len(skipped), len(kept))


def expire_handoffs(db: sa.Engine, bot: BotDefinition, *, now: datetime) -> list[HandBack]:
    """Hand back every conversation whose handoff stage's ``handoff_timeout`` ran out without an operator.

    The time counts from the handoff or the last operator message, whichever is later. The bot resumes at the
    stage's ``handoff_return`` (default: start) and answers the newest waiting message.
    """
    c = conversations.c
    done: list[HandBack] = []
    for name, spec in bot.stages.items():
        if not spec.handoff or spec.handoff_timeout is None:
            continue
        due = sa.select(c.id).where(
            c.mode == "human",
            c.stage == name,
            c.handoff_at.is_not(None),
            sa.or_(c.last_operator_at.is_(None), c.last_operator_at <= now - spec.handoff_timeout),
            c.handoff_at <= now - spec.handoff_timeout,
        )
        with db.begin() as connection:
            for conversation_id in connection.execute(due.limit(500)).scalars().all():
                done.append(
                    hand_back(connection, bot, conversation_id, now=now, stage=spec.handoff_return, answer_latest=True)
                )
    if any(back.kept for back in done):
        announce(db, "inbox")
    return done


def take_over(db: sa.Engine, conversation_id: int, *, now: datetime) -> None:
    """A person takes the conversation (mode ``human``) before writing: the bot stops answering it.

    A paused conversation stays paused. Raises ConversationNotFoundError.
    """
    with db.begin() as connection:
        get_conversation(connection, conversation_id)
        c = conversations.c
        connection.execute(
            sa.update(conversations)
            .where(c.id == conversation_id, c.mode == "bot")
            .values(mode="human", handoff_at=sa.func.coalesce(c.handoff_at, now), updated_at=now)
        )
