"""The stage machine's decisions: where a user's message takes the conversation.

Rules (docs/stages.md): a stage's transitions are tried in order; deterministic conditions (``button``,
``keywords``, ``regex``) match first, then — only when the stage lists intents and the message has text — the AI
chooses among the listed intents, then ``default``. No match: the conversation stays and the stage answers again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatops.channels.events import InboundMessage
from chatops.config.bot_schema import Condition, Stage

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Decision:
    """The stage to answer from, and why (``button``, ``keywords``, ``regex``, ``intent``, ``default``, ``stay``)."""

    stage: str
    reason: str
    intent: str | None = None


def button_of(message: InboundMessage) -> str | None:
    """The button id / quick-reply or postback payload the user pressed, if any."""
    value = message.payload.get("button")
    return str(value) if value is not None else None


def matches_deterministically(condition: Condition, message: InboundMessage) -> str | None:
    """The reason ``condition`` matches ``message`` without the AI, or ``None``."""
    if condition.button is not None:
        return "button" if button_of(message) == condition.button else None
    text = message.text or ""
    if condition.keywords is not None:
        words = {word.casefold() for word in _WORD.findall(text)}
        wanted = [keyword.casefold() for keyword in condition.keywords]
        hit = any((k in words) if " " not in k else (k in text.casefold()) for k in wanted)
        return "keywords" if hit else None
    if condition.regex is not None:
        return "regex" if re.search(condition.regex, text) else None
    return None


def decide(
    current: str,
    stage: Stage,
    message: InboundMessage,
    *,
    classify: Callable[[Sequence[str]], str | None],
) -> Decision:
    """Where ``message`` takes a conversation sitting at ``current``.

    ``classify(intents)`` asks the AI and is called at most once, only when no deterministic condition matched,
    the stage lists intents and the message has text.
    """
    for transition in stage.transitions:
        reason = matches_deterministically(transition.when, message)
        if reason is not None:
            return Decision(transition.to, reason)
    intents = stage.intents
    if intents and (message.text or "").strip():
        chosen = classify(intents)
        for transition in stage.transitions:
            if chosen is not None and transition.when.intent == chosen:
                return Decision(transition.to, "intent", chosen)
    for transition in stage.transitions:
        if transition.when.default:
            return Decision(transition.to, "default")
    return Decision(current, "stay")
