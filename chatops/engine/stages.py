"""The stage machine's decisions: where a user's message takes the conversation.

Rules (docs/stages.md): a stage's transitions are tried in order; deterministic conditions (``button``,
``keywords``, ``regex``, ``state``, ``if``) match first, then — only when the stage lists intents and the message
has text — the AI chooses among the listed intents, then ``default``. No match: the conversation stays and the
stage answers again. A matching ``regex`` hands its named groups on as ``match``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chatops.channels.events import InboundMessage
from chatops.config.bot_schema import Condition, Stage, Transition

_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Decision:
    """The stage to answer from, and why (``button``, ``keywords``, ``regex``, ``state``, ``if``, ``intent``,
    ``default``, ``stay``); the transition taken (None for ``stay``) and a regex's named groups (``match``)."""

    stage: str
    reason: str
    intent: str | None = None
    transition: Transition | None = None
    groups: Mapping[str, str | None] = field(default_factory=dict)


def button_of(message: InboundMessage) -> str | None:
    """The button id / quick-reply or postback payload the user pressed, if any."""
    value = message.payload.get("button")
    return str(value) if value is not None else None


def matches_deterministically(
    condition: Condition, message: InboundMessage, *, check: Callable[[Condition], bool] | None = None
) -> str | None:
    """The reason ``condition`` matches ``message`` without the AI, or ``None``.

    ``check`` decides ``state`` and ``if`` conditions (they read the conversation's memory); without it they never
    match.
    """
    if condition.state is not None or condition.test is not None:
        # A state guard with another condition: the guard must hold, then the other condition decides.
        if check is None or not check(condition):
            return None
        if condition.kind in ("state", "if"):
            return condition.kind
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
    check: Callable[[Condition], bool] | None = None,
) -> Decision:
    """Where ``message`` takes a conversation sitting at ``current``.

    ``classify(intents)`` asks the AI and is called at most once, only when no deterministic condition matched,
    the stage lists intents and the message has text. ``check`` decides ``state``/``if`` conditions.
    """
    for transition in stage.transitions:
        reason = matches_deterministically(transition.when, message, check=check)
        if reason is not None:
            return Decision(transition.to, reason, transition=transition, groups=_groups(transition.when, message))
    intents = stage.intents
    if intents and (message.text or "").strip():
        chosen = classify(intents)
        for transition in stage.transitions:
            if chosen is not None and transition.when.intent == chosen and _guard(transition.when, check):
                return Decision(transition.to, "intent", chosen, transition=transition)
    for transition in stage.transitions:
        if transition.when.default and _guard(transition.when, check):
            return Decision(transition.to, "default", transition=transition)
    return Decision(current, "stay")


def _guard(condition: Condition, check: Callable[[Condition], bool] | None) -> bool:
    return condition.state is None or (check is not None and check(condition))


def _groups(condition: Condition, message: InboundMessage) -> dict[str, Any]:
    if condition.regex is None:
        return {}
    found = re.search(condition.regex, message.text or "")
    return found.groupdict() if found is not None else {}
