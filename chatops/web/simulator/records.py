"""Reading (and, in-process, settling) what a simulated message produced in the database.

Settling is what keeps simulate from ever reaching Meta: each ``pending`` outbound row of a simulated turn is
marked ``sent`` with provider id ``simulated.<row id>`` (or ``failed`` when the channel's request builder refuses
it, or the 24-hour window is closed and there is no template, as the sender would decide), in the same database.
No sender, now or later, claims a row that is not ``pending``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from chatops.channels import ADAPTERS, OutboundMessage
from chatops.channels.events import Channel
from chatops.channels.whatsapp import MAX_REPLY_BUTTONS
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings
from chatops.db.connect import storage_error
from chatops.db.outbox import mark_failed, mark_sent
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from chatops.engine.memory import visible_values
from chatops.engine.runtime import whatsapp_template
from chatops.engine.sender import CUSTOMER_SERVICE_WINDOW, OUTSIDE_WINDOW_ERROR
from chatops.engine.window import UNRENDERED_PARAMS, window_message
from chatops.errors import ChannelError
from chatops.web.simulator.bodies import SIMULATED_PREFIX, ButtonOffer, UserInput
from chatops.web.simulator.results import SimulatedReply, SimulatedTurn, SimulationResult

# Fictional business accounts for simulated conversations (phone_number_id, page id), unless settings name one.
SIMULATED_ACCOUNT_IDS: dict[Channel, str] = {"whatsapp": "100000000000001", "messenger": "100000000000002"}
_TRACE = (
    "variables",
    "prompt",
    "model",
    "parameters",
    "intent",
    "ai_response",
    "usage",
    "latency_ms",
    "template_versions",
    "bot_version",
)


def account_id_for(settings: Settings, channel: Channel) -> str:
    """The business account simulated messages go to."""
    # The webhook route drops WhatsApp accounts outside CHATOPS_WHATSAPP_PHONE_NUMBER_IDS: use an allowed one.
    if channel == "whatsapp" and settings.whatsapp_phone_number_ids:
        return settings.whatsapp_phone_number_ids[0]
    return SIMULATED_ACCOUNT_IDS[channel]


@dataclass(frozen=True)
class UserConversation:
    """One user's conversation with the bot on one channel, in ``db``, seen at the time ``clock`` gives."""

    db: sa.Engine
    bot: BotDefinition
    settings: Settings
    channel: Channel
    account_id: str
    user_id: str
    user_name: str | None
    clock: Callable[[], datetime]

    def conversation_id(self) -> int | None:
        """The conversation's row id; ``None`` before its first message."""
        c = conversations.c
        query = sa.select(c.id).where(
            c.channel == self.channel, c.account_id == self.account_id, c.user_id == self.user_id
        )
        rows = self._read(query)
        return int(rows[0].id) if rows else None

    def last_turn_id(self) -> int:
        """The id of the conversation's latest turn (0 when none): turns after it are new."""
        conversation_id = self.conversation_id()
        if conversation_id is None:
            return 0
        t = turns.c
        rows = self._read(sa.select(sa.func.max(t.id)).where(t.conversation_id == conversation_id))
        return int(rows[0][0] or 0)

    def inbound(self, message_id: str) -> dict[str, Any]:
        """The stored inbound message (id, conversation_id, status, error, turn_id); empty when not stored."""
        m = inbound_messages.c
        query = sa.select(m.id, m.conversation_id, m.status, m.error, m.turn_id).where(
            m.channel == self.channel, m.provider_message_id == message_id
        )
        rows = self._read(query)
        return dict(rows[0]._mapping) if rows else {}

    def button_offer(self, button: str | None) -> ButtonOffer | None:
        """How ``button`` was offered: in the latest bot message showing it, else by a stage of stages.yaml."""
        if button is None:
            return None
        conversation_id = self.conversation_id()
        if conversation_id is not None:
            o = outbound_messages.c
            query = sa.select(o.body, o.provider_message_id).where(o.conversation_id == conversation_id)
            for row in self._read(query.order_by(o.id.desc()).limit(20)):
                offered = row.body.get("buttons") or []
                for choice in offered:
                    if choice.get("id") == button:
                        return ButtonOffer(
                            choice.get("title") or button,
                            offered_in=row.provider_message_id,
                            as_list=len(offered) > MAX_REPLY_BUTTONS,
                            description=choice.get("description"),
                            quick_reply=True,
                        )
        for stage in self.bot.stages.values():
            for choice in stage.buttons:
                if choice.id == button:
                    return ButtonOffer(choice.title, description=choice.description)
        return ButtonOffer(button)

    def reset(self) -> bool:
        """Start the conversation afresh: no stage, empty state, bot mode; turns and messages are kept.

        Its pending inbound messages become ``skipped`` (a new start does not answer them). Returns False when the
        user has no conversation yet. Raises StorageError.
        """
        conversation_id = self.conversation_id()
        if conversation_id is None:
            return False
        c, m = conversations.c, inbound_messages.c
        try:
            with self.db.begin() as connection:
                connection.execute(
                    conversations.update()
                    .where(c.id == conversation_id)
                    .values(stage=None, state={}, mode="bot", session_started_at=None, updated_at=self.clock())
                )
                connection.execute(
                    inbound_messages.update()
                    .where(m.conversation_id == conversation_id, m.status == "pending")
                    .values(status="skipped", error="skipped by `chatops simulate --fresh`")
                )
        except sa.exc.DBAPIError as exc:
            raise storage_error(self.db, exc) from None
        return True

    def result(
        self, sent: UserInput, message_id: str, webhook_status: int, *, after_turn: int, settle: bool
    ) -> SimulationResult:
        """What ``message_id`` led to: the turns after ``after_turn``; with ``settle``, pending replies settled."""
        inbound = self.inbound(message_id)
        conversation_id = inbound.get("conversation_id")
        c, t = conversations.c, turns.c
        state = self._read(sa.select(c.stage, c.mode, c.state).where(c.id == conversation_id))
        query = sa.select(turns).where(t.conversation_id == conversation_id, t.id > after_turn).order_by(t.id)
        new_turns = [self._turn(row, settle=settle) for row in self._read(query)]
        answering = next((turn for turn in new_turns if turn.id == inbound.get("turn_id")), None)
        return SimulationResult(
            channel=self.channel,
            user_id=self.user_id,
            user_name=self.user_name,
            sent=sent,
            message_id=message_id,
            webhook_status=webhook_status,
            conversation_id=conversation_id,
            message_status=inbound.get("status"),
            message_error=inbound.get("error"),
            mode=state[0].mode if state else None,
            stage=state[0].stage if state else None,
            state=visible_values(state[0].state or {}) if state else None,
            turn=answering,
            earlier_turns=tuple(turn for turn in new_turns if turn is not answering),
        )

    def _turn(self, row: sa.Row[Any], *, settle: bool) -> SimulatedTurn:
        o = outbound_messages.c
        query = sa.select(outbound_messages).where(o.turn_id == row.id).order_by(o.id)
        replies = tuple(self._reply(reply, settle=settle) for reply in self._read(query))
        trace = {name: getattr(row, name) for name in _TRACE}
        trace |= {"started_at": row.started_at.isoformat(), "finished_at": row.finished_at.isoformat()}
        return SimulatedTurn(
            row.id,
            row.stage_before,
            row.stage_after,
            row.stage_answered,
            row.user_text,
            trace,
            row.error,
            replies,
            state_before=visible_values(row.state_before or {}),
            state_after=visible_values(row.state_after or {}),
            extraction=row.extraction,
        )

    def _reply(self, row: sa.Row[Any], *, settle: bool) -> SimulatedReply:
        message = OutboundMessage.from_json(row.body)
        to_send: OutboundMessage | None = message
        error = None
        if settle and row.status == "pending" and self._outside_window():
            template = whatsapp_template(self.bot) if self.channel == "whatsapp" else None
            to_send = None if template is None else window_message(template, message)
            if to_send is None:
                error = OUTSIDE_WINDOW_ERROR if template is None else f"{OUTSIDE_WINDOW_ERROR}; {UNRENDERED_PARAMS}"
        request = None
        if to_send is not None:
            try:
                body = ADAPTERS[self.channel].build_request(self.user_id, to_send)
                path = f"/{self.account_id}/messages" if self.channel == "whatsapp" else "/me/messages"
                request = {"method": "POST", "url": self.settings.graph_api_url + path, "json": body}
            except ChannelError as exc:
                error = exc.message
        status, provider_id = row.status, row.provider_message_id
        if settle and row.status == "pending":
            try:
                with self.db.begin() as connection:
                    if error is None:
                        provider_id, status = f"{SIMULATED_PREFIX}{row.id}", "sent"
                        mark_sent(connection, row.id, provider_message_id=provider_id, now=self.clock())
                    else:
                        status = "failed"
                        mark_failed(connection, row.id, error_code=None, error=error, now=self.clock())
            except sa.exc.DBAPIError as exc:
                raise storage_error(self.db, exc) from None
        return SimulatedReply(row.id, message, status, provider_id, request, error or row.error)

    def _outside_window(self) -> bool:
        """The sender's 24-hour customer-service rule, on this conversation's clock."""
        c = conversations.c
        query = sa.select(c.last_inbound_at).where(
            c.channel == self.channel, c.account_id == self.account_id, c.user_id == self.user_id
        )
        rows = self._read(query)
        last = rows[0].last_inbound_at if rows else None
        return last is None or self.clock() - last > CUSTOMER_SERVICE_WINDOW

    def _read(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        try:
            with self.db.connect() as connection:
                return list(connection.execute(query).all())
        except sa.exc.DBAPIError as exc:
            raise storage_error(self.db, exc) from None
