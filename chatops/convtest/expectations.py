"""Checking one ``expect:`` key against what a step did; each failure is the sentence a user reads.

The AI-graded keys (``similar_to``, ``judge``) need a model and live in :mod:`chatops.convtest.graded`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from chatops.convtest.cases import Expectation
from chatops.convtest.outcome import StepOutcome

Check = Callable[[Any, StepOutcome], str | None]


def check(expectation: Expectation, outcome: StepOutcome) -> str | None:
    """``None`` when ``outcome`` meets ``expectation``, else ``key: what was expected, what happened``."""
    failure = _CHECKS[expectation.key](expectation.value, outcome)
    return None if failure is None else f"{expectation.key}: {failure}"


def _stage(expected: str, outcome: StepOutcome) -> str | None:
    return None if outcome.stage == expected else f"expected {expected!r}, got {outcome.stage!r}"


def _state(expected: dict[str, Any], outcome: StepOutcome) -> str | None:
    return None if outcome.state == expected else f"expected {expected!r}, got {outcome.state!r}"


def _state_contains(expected: dict[str, Any], outcome: StepOutcome) -> str | None:
    wrong = []
    for name, value in expected.items():
        if name not in outcome.state:
            if value is not None:  # `name: null` asserts the value is not kept
                wrong.append(f"{name} expected {value!r}, not kept")
        elif outcome.state[name] != value:
            wrong.append(f"{name} expected {value!r}, got {outcome.state[name]!r}")
    return None if not wrong else "; ".join(wrong) + f" (state: {outcome.state!r})"


def _reply(expected: list[str], outcome: StepOutcome) -> str | None:
    actual = outcome.texts
    if actual == expected:
        return None
    if len(expected) == 1 and len(actual) == 1:
        return f"expected {expected[0]!r}, got {actual[0]!r}"
    return f"expected {expected!r}, got {actual!r}"


def _reply_contains(expected: list[str], outcome: StepOutcome) -> str | None:
    missing = [text for text in expected if text not in outcome.joined]
    return None if not missing else f"{_listed(missing)} not in the replies {outcome.texts!r}"


def _reply_not_contains(expected: list[str], outcome: StepOutcome) -> str | None:
    found = [text for text in expected if text in outcome.joined]
    return None if not found else f"{_listed(found)} found in the replies {outcome.texts!r}"


def _reply_regex(expected: str, outcome: StepOutcome) -> str | None:
    if re.search(expected, outcome.joined):
        return None
    return f"no match for {expected!r} in the replies {outcome.texts!r}"


def _reply_count(expected: int, outcome: StepOutcome) -> str | None:
    count = len(outcome.replies)
    return None if count == expected else f"expected {expected}, got {count} {outcome.texts!r}"


def _buttons(expected: list[str], outcome: StepOutcome) -> str | None:
    offered = [button for reply in outcome.replies for button in reply.buttons]
    return None if offered == expected else f"expected {expected!r}, got {offered!r}"


def _max_length(expected: int, outcome: StepOutcome) -> str | None:
    long = [(number, len(text)) for number, text in enumerate(outcome.texts, start=1) if len(text) > expected]
    if not long:
        return None
    return "; ".join(f"reply {number} has {length} characters, more than {expected}" for number, length in long)


def _handoff(expected: bool, outcome: StepOutcome) -> str | None:
    handed = outcome.mode == "human"
    if handed == expected:
        return None
    if expected:
        return f"expected the conversation handed to a person, it is in {outcome.mode!r} mode"
    return "expected the bot to keep the conversation, it was handed to a person"


def _error(expected: bool | str, outcome: StepOutcome) -> str | None:
    errors = " | ".join(outcome.errors)
    if expected is False:
        return None if not errors else f"expected no error, got {errors!r}"
    if not errors:
        return "expected a failed turn, there was none"
    if isinstance(expected, str) and expected not in errors:
        return f"expected an error containing {expected!r}, got {errors!r}"
    return None


def _window_template(expected: bool | str, outcome: StepOutcome) -> str | None:
    sent = [reply.template for reply in outcome.replies if reply.template is not None]
    if expected is False:
        return None if not sent else f"expected no template, got {sent[0]!r}"
    if not sent:
        unsent = [reply.error for reply in outcome.replies if reply.status != "sent"]
        if unsent:  # the window closed but the bot has no whatsapp_template (or it is Messenger)
            return f"expected a template (the 24-hour window closed), none went: the replies failed ({unsent[0]})"
        return "expected a template (the 24-hour window closed), the replies went as free text"
    if isinstance(expected, str) and expected not in sent:
        return f"expected template {expected!r}, got {sent[0]!r}"
    return None


def _ai_called(expected: bool, outcome: StepOutcome) -> str | None:
    if outcome.ai_called == expected:
        return None
    return "expected the AI to be called, it was not" if expected else "expected no AI call, the AI was called"


def _listed(texts: list[str]) -> str:
    return ", ".join(repr(text) for text in texts)


_CHECKS: dict[str, Check] = {
    "stage": _stage,
    "state": _state,
    "state_contains": _state_contains,
    "reply": _reply,
    "reply_contains": _reply_contains,
    "reply_not_contains": _reply_not_contains,
    "reply_regex": _reply_regex,
    "reply_count": _reply_count,
    "buttons": _buttons,
    "max_length": _max_length,
    "handoff": _handoff,
    "error": _error,
    "window_template": _window_template,
    "ai_called": _ai_called,
}
LOCAL_KEYS = frozenset(_CHECKS)  # checked without a model
