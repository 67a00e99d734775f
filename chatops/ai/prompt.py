"""What is sent to the model: the request, its messages, and the intent schema for classification.

The user's text is always its own ``user`` message: it is data, never spliced into the system prompt, so a
user typing "ignore your instructions" cannot rewrite them (the model still sees it, as the user's words).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

NO_INTENT = "none"
"""The extra enum value meaning "none of the listed intents"; it maps to ``IntentResult.intent is None``."""

HISTORY_ROLES = ("user", "assistant")
_SCHEMA_NAME = "intent_choice"

Message = dict[str, str]


@dataclass(frozen=True, kw_only=True)
class ChatRequest:
    """One call to the model: the rendered system prompt, the windowed history and the user's new text.

    ``history`` holds ``(role, text)`` pairs, oldest first, role ``user`` or ``assistant``; the engine windows
    it. ``timeout`` (seconds, per attempt) overrides the client's default when set.
    """

    system_prompt: str
    user_text: str
    history: Sequence[tuple[str, str]] = field(default=())
    model: str = "gpt-4o-mini"
    temperature: float = 0.3
    max_tokens: int = 300
    timeout: float | None = None

    def __post_init__(self) -> None:
        # A tuple keeps the frozen request truly immutable (a caller's list could change under us).
        object.__setattr__(self, "history", tuple((role, text) for role, text in self.history))
        for role, _ in self.history:
            if role not in HISTORY_ROLES:
                raise ValueError(f"history role must be one of {HISTORY_ROLES}, not {role!r}")


def build_messages(request: ChatRequest) -> list[Message]:
    """The Chat Completions ``messages``: system prompt, then the history, then the user's text on its own."""
    messages: list[Message] = []
    if request.system_prompt:
        messages.append({"role": "system", "content": request.system_prompt})
    messages.extend({"role": role, "content": text} for role, text in request.history)
    messages.append({"role": "user", "content": request.user_text})
    return messages


def allowed_intents(intents: Sequence[str]) -> list[str]:
    """The intents in their given order, without duplicates or blanks, and without ``none`` (added last)."""
    seen: list[str] = []
    for intent in intents:
        if intent and intent != NO_INTENT and intent not in seen:
            seen.append(intent)
    return seen


def build_classify_messages(request: ChatRequest, intents: Sequence[str]) -> list[Message]:
    """Messages asking the model to pick one of ``intents`` for the user's text.

    One system message (some OpenAI-compatible servers accept only one, first) holds our instruction and the
    stage's prompt as context; the history and the user's text follow as separate messages.
    """
    choices = ", ".join(allowed_intents(intents))
    instruction = (
        "Classify the user's last message into exactly one of these intents: "
        f"{choices}. Answer {NO_INTENT!r} when none of them fits. Reply with the JSON object only."
    )
    if request.system_prompt:
        instruction += f"\n\nContext: the assistant's instructions for this step are:\n{request.system_prompt}"
    messages: list[Message] = [{"role": "system", "content": instruction}]
    messages.extend({"role": role, "content": text} for role, text in request.history)
    messages.append({"role": "user", "content": request.user_text})
    return messages


def intent_response_format(intents: Sequence[str]) -> dict[str, Any]:
    """The ``response_format`` restricting the answer to ``{"intent": <one of intents or "none">}`` (strict)."""
    enum = [*allowed_intents(intents), NO_INTENT]
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _SCHEMA_NAME,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"intent": {"type": "string", "enum": enum}},
                "required": ["intent"],
                "additionalProperties": False,
            },
        },
    }


def parse_intent(content: str | None, intents: Sequence[str]) -> str | None:
    """The intent named by the model's JSON answer, or None for ``none``, anything outside ``intents``, or
    an answer that is not the expected JSON object (a model may ignore the schema; the turn falls to default).
    """
    if not content:
        return None
    try:
        answer = json.loads(content)
    except ValueError:
        return None
    if not isinstance(answer, dict):
        return None
    intent = answer.get("intent")
    if isinstance(intent, str) and intent in allowed_intents(intents):
        return intent
    return None
