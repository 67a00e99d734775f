"""What one simulated message did: the turn that answered it, with its replies and their Graph API requests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chatops.channels.events import Channel, OutboundMessage
from chatops.engine.memory import visible_values
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
class StateChanges:
    """What a turn did to the conversation's state: names it set, names the form extracted, names it cleared.

    A name counts once: ``extracted`` when the form's extraction proposed the value it now has, else ``set``.
    ``cleared`` names were there before the turn and are not after it (``clear:``, an invalid form field).
    """

    set: tuple[str, ...] = ()
    extracted: tuple[str, ...] = ()
    cleared: tuple[str, ...] = ()

    @classmethod
    def between(
        cls, before: Mapping[str, Any], after: Mapping[str, Any], extraction: Mapping[str, Any] | None = None
    ) -> StateChanges:
        """The changes from ``before`` to ``after`` (visible names only), ``extraction`` as recorded on the turn."""
        before, after = visible_values(before), visible_values(after)
        proposed = (extraction or {}).get("proposed") or {}
        changed = sorted(name for name in after if name not in before or before[name] != after[name])
        extracted = tuple(name for name in changed if name in proposed and proposed[name] == after[name])
        return cls(
            set=tuple(name for name in changed if name not in extracted),
            extracted=extracted,
            cleared=tuple(sorted(name for name in before if name not in after)),
        )

    def __bool__(self) -> bool:
        return bool(self.set or self.extracted or self.cleared)

    def to_json(self) -> dict[str, list[str]]:
        return {"set": list(self.set), "extracted": list(self.extracted), "cleared": list(self.cleared)}


@dataclass(frozen=True)
class SimulatedTurn:
    """One row of ``turns`` with its replies; ``trace`` holds the rest of the row (variables, prompt, model …).

    ``state_before``/``state_after`` are the conversation's memory around the turn, without the engine's own ``_``
    names; ``extraction`` is the form's record (``turns.extraction``), if the stage has ``extract:``.
    """

    id: int
    stage_before: str | None
    stage_after: str | None
    stage_answered: str | None
    user_text: str | None
    trace: dict[str, Any]
    error: str | None
    replies: tuple[SimulatedReply, ...]
    state_before: dict[str, Any] = field(default_factory=dict)
    state_after: dict[str, Any] = field(default_factory=dict)
    extraction: dict[str, Any] | None = None

    @property
    def state_changes(self) -> StateChanges:
        return StateChanges.between(self.state_before, self.state_after, self.extraction)

    def to_json(self) -> dict[str, Any]:
        return {
            "turn_id": self.id,
            "stage_before": self.stage_before,
            "stage_after": self.stage_after,
            "stage_answered": self.stage_answered,
            "user_text": self.user_text,
            "replies": [reply.to_json() for reply in self.replies],
            **self.trace,
            "state_before": self.state_before,
            "state_after": self.state_after,
            "state_changes": self.state_changes.to_json(),
            "extraction": self.extraction,
            "error": self.error,
        }


@dataclass(frozen=True)
class SimulationResult:
    """What one simulated message did. ``turn`` answered it; ``earlier_turns`` answered older pending messages.

    ``message_status`` is the inbound row's status: ``done``, ``skipped``, ``failed``, or ``pending`` when no turn
    ran (the conversation is with a person, a failed turn waits for its retry, a remote server is slow).
    ``state`` is the conversation's memory afterwards, without the engine's own ``_`` names.
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
            "state": self.state,
            "earlier_turns": [t.to_json() for t in self.earlier_turns],
            "note": self.note,
        }
