"""What one simulated message did: the turn that answered it, with its replies and their Graph API requests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chatops.channels.events import Channel, OutboundMessage
from chatops.web.simulator.bodies import UserInput


@dataclass(frozen=True)
class SimulatedReply:
    """One outbound row of a turn: its body, the Graph API request that carries it, and what became of it.

    ``request`` is ``{"method", "url", "json"}``: what the sender POSTs for this row (the token left out), or
    ``None`` when the request builder refuses the message (``error`` says why).
    """

    id: int
    message: OutboundMessage
    status: str
    provider_message_id: str | None
    request: dict[str, Any] | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "provider_message_id": self.provider_message_id,
            "body": self.message.to_json(),
            "request": self.request,
            "error": self.error,
        }


@dataclass(frozen=True)
class SimulatedTurn:
    """One row of ``turns`` with its replies; ``trace`` holds the rest of the row (variables, prompt, model …)."""

    id: int
    stage_before: str | None
    stage_after: str | None
    stage_answered: str | None
    user_text: str | None
    trace: dict[str, Any]
    error: str | None
    replies: tuple[SimulatedReply, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "turn_id": self.id,
            "stage_before": self.stage_before,
            "stage_after": self.stage_after,
            "stage_answered": self.stage_answered,
            "user_text": self.user_text,
            "replies": [reply.to_json() for reply in self.replies],
            **self.trace,
            "error": self.error,
        }


@dataclass(frozen=True)
class SimulationResult:
    """What one simulated message did. ``turn`` answered it; ``earlier_turns`` answered older pending messages.

    ``message_status`` is the inbound row's status: ``done``, ``skipped``, ``failed``, or ``pending`` when no turn
    ran (the conversation is with a person, a failed turn waits for its retry, a remote server is slow).
    ``state`` is the conversation's memory afterwards (not part of ``to_json``: simulate's output is unchanged).
    ``transcript`` is False when the turns could not be read (``--url`` and another database); ``note`` says why.
    """

    channel: Channel
    user_id: str
    user_name: str | None
    sent: UserInput
    message_id: str
    webhook_status: int
    conversation_id: int | None = None
    message_status: str | None = None
    message_error: str | None = None
    mode: str | None = None
    stage: str | None = None
    state: dict[str, Any] | None = None  # the conversation's memory after the message
    turn: SimulatedTurn | None = None
    earlier_turns: tuple[SimulatedTurn, ...] = ()
    transcript: bool = True
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One machine-readable object (``simulate --json``), the answering turn's fields at the top level."""
        turn = self.turn.to_json() if self.turn else {"turn_id": None, "stage_before": self.stage, "replies": []}
        return {
            "channel": self.channel,
            "conversation_id": self.conversation_id,
            "user": {"id": self.user_id, "name": self.user_name},
            "message": {
                "id": self.message_id,
                **self.sent.to_json(),
                "status": self.message_status,
                "error": self.message_error,
            },
            "webhook_status": self.webhook_status,
            "mode": self.mode,
            **turn,
            "stage_after": turn.get("stage_after", self.stage),
            "earlier_turns": [t.to_json() for t in self.earlier_turns],
            "note": self.note,
        }
