"""What one step of a case did, in the terms expectations speak: stage, state, replies, handoff, errors, AI."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chatops.channels.events import OutboundMessage
from chatops.web.simulator import SimulatedReply, SimulationResult


@dataclass(frozen=True)
class SentReply:
    """One reply as the user would get it: text, button ids, and the template name when one went instead."""

    text: str
    buttons: tuple[str, ...] = ()
    template: str | None = None  # a WhatsApp template sent (the window was closed, or the stage sends one)
    status: str = "sent"
    error: str | None = None

    @classmethod
    def from_simulated(cls, reply: SimulatedReply) -> SentReply:
        message: OutboundMessage = reply.message
        template = message.template_name if message.kind == "template" else None
        body = (reply.request or {}).get("json") or {}
        if template is None and body.get("type") == "template":
            template = str((body.get("template") or {}).get("name") or "")
        return cls(message.text, tuple(b.id for b in message.buttons), template, reply.status, reply.error)


@dataclass(frozen=True)
class StepOutcome:
    """The conversation after one step. ``result`` is None for a ``wait`` step (nothing was sent)."""

    stage: str | None
    state: dict[str, Any]
    mode: str | None
    replies: tuple[SentReply, ...] = ()
    errors: tuple[str, ...] = ()  # the step's failed turns
    ai_called: bool = False
    message_status: str | None = None
    result: SimulationResult | None = field(default=None, repr=False)

    @property
    def texts(self) -> list[str]:
        return [reply.text for reply in self.replies]

    @property
    def joined(self) -> str:
        """All reply texts, a blank line between them (what contains/regex look at)."""
        return "\n\n".join(self.texts)

    @classmethod
    def from_result(cls, result: SimulationResult) -> StepOutcome:
        turns = (*result.earlier_turns, *((result.turn,) if result.turn else ()))
        replies = tuple(SentReply.from_simulated(reply) for turn in turns for reply in turn.replies)
        # Any model call of the turn: a reply written by the AI, an intent chosen by it, or fields extracted.
        ai_called = any(
            turn.trace.get("model") is not None
            or turn.trace.get("ai_response") is not None
            or turn.trace.get("intent") is not None
            for turn in turns
        )
        return cls(
            stage=result.stage,
            state=dict(result.state or {}),
            mode=result.mode,
            replies=replies,
            errors=tuple(turn.error for turn in turns if turn.error),
            ai_called=ai_called,
            message_status=result.message_status,
            result=result,
        )
