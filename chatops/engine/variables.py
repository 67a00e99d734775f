"""The variables of a turn: the engine's side of the variable providers.

Builds the :class:`ProviderContext` from the conversation and message, and runs only the providers the stage
needs: those listed in the stage's ``providers``, or else those its templates and its ``set:`` mention (so a stage
that never shows an order does not call the order API). What providers return comes from outside: every string in
it (keys included) is cleaned here (:func:`chatops.text.clean_value`), so a reply, the AI prompt and the turn's
variables snapshot can always be stored and sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from chatops.channels.events import InboundMessage
from chatops.config.bot_schema import BotDefinition, Stage
from chatops.db.inbox import Conversation, PastTurn
from chatops.engine.memory import visible_values
from chatops.errors import ProviderError
from chatops.templating.builtin import message_variables
from chatops.templating.providers import ConversationInfo, ProviderContext, ProviderRunner, UserInfo
from chatops.templating.sandbox import Namespace, assignment_reads
from chatops.templating.store import TemplateStore
from chatops.text import clean_value


class VariableSource:
    """Fetches a stage's variables for a turn. Shared by all workers of a process (thread-safe)."""

    def __init__(self, bot: BotDefinition, templates: TemplateStore, runner: ProviderRunner) -> None:
        self.bot = bot
        self.templates = templates
        self.runner = runner
        self.provider_names = frozenset(spec.name for spec in bot.providers)

    def fetch(
        self,
        conversation: Conversation,
        message: InboundMessage,
        *,
        stage_name: str,
        stage: Stage,
        now: datetime,
        templates: Sequence[str] | None = None,
        history: Sequence[PastTurn] = (),
        state: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Static, built-in and provider variables for ``stage`` (or for ``templates`` only, when given).

        ``state`` is the conversation's memory the providers may read (``ProviderContext.state``; the engine's own
        ``_`` names are left out). Raises ProviderError naming every provider that failed or timed out.
        """
        context = self.context(
            conversation, message, now=now, history=history, reveal_phone=stage.reveal_phone, state=state
        )
        result = self.runner.fetch_variables(context, names=self.needed(stage, templates))
        if result.errors:
            failures = "; ".join(f"{failure.name}: {failure.error}" for failure in result.errors)
            raise ProviderError(f"stage {stage_name!r}: provider failed: {failures}")
        return {
            name: Namespace(name, clean_value(dict(value))) if name in self.provider_names else value
            for name, value in result.variables.items()
        }

    def needed(self, stage: Stage, templates: Sequence[str] | None = None) -> frozenset[str]:
        """The providers a stage's reply/prompt and ``set:`` use (or the stage's explicit ``providers`` list), or
        those ``templates`` use when given."""
        if stage.providers is not None and templates is None:
            return frozenset(stage.providers)
        used: set[str] = set()
        for name in templates if templates is not None else (stage.reply, stage.prompt):
            if name is not None:
                used |= self.templates.variables_used(name)
        if templates is None:  # the stage answers: its set: runs after the providers and may read them
            used |= assignment_reads(stage.assign)
        return self.provider_names & used

    def context(
        self,
        conversation: Conversation,
        message: InboundMessage,
        *,
        now: datetime,
        history: Sequence[PastTurn] = (),
        reveal_phone: bool = False,
        state: Mapping[str, Any] | None = None,
    ) -> ProviderContext:
        """What providers and built-ins may read in this turn (``history`` becomes ``conversation.last_messages``).

        ``reveal_phone`` lets the templates see the WhatsApp number unmasked (a stage's ``reveal_phone: true``);
        ``state`` becomes ``ProviderContext.state`` without the engine's ``_`` names.
        """
        hours = self.bot.bot.business_hours
        return ProviderContext(
            user=UserInfo(
                id=conversation.user_id,
                channel=conversation.channel,
                name=conversation.user_name,
                phone=conversation.user_id if conversation.channel == "whatsapp" else None,
                reveal_phone=reveal_phone,
            ),
            conversation=ConversationInfo(
                id=conversation.id,
                stage=conversation.stage,
                turn_count=conversation.turn_count,
                started_at=conversation.session_started_at,
                last_messages=_last_messages(history),
            ),
            now=now,
            message=message_variables(message),
            timezone=self.bot.bot.timezone,
            business_hours=hours.text if hours else None,
            static=self.bot.variables,
            state=visible_values(state or {}),
        )


def _last_messages(history: Sequence[PastTurn]) -> tuple[dict[str, Any], ...]:
    messages: list[dict[str, Any]] = []
    for turn in history:
        if turn.user_text:
            messages.append({"direction": "in", "text": turn.user_text, "at": turn.finished_at})
        messages.extend({"direction": "out", "text": text, "at": turn.finished_at} for text in turn.replies)
    return tuple(messages)
