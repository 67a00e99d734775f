"""Forms: an ``extract:`` stage collects typed fields over several turns, in any order, and moves on when done.

Each turn the stage answers, the AI (or the offline rules) proposes values for the declared fields; each proposal
is validated here (pydantic, against the field's type and constraints) before it is kept in the state. While a
required field is missing or a given value is invalid, the stage stays and asks for the first such field (its
``ask:`` template sees ``form.field``, ``form.error``, ``form.value``); after ``max_attempts`` answers that leave
the form incomplete the conversation follows ``on_invalid``. The form's progress is kept in the state under
``_form`` (templates never see it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, time
from typing import Annotated, Any

from pydantic import Field, StringConstraints, TypeAdapter, ValidationError

from chatops.channels.events import Button
from chatops.config.bot_schema import MAX_BUTTONS, Stage
from chatops.config.memory_schema import ExtractField
from chatops.engine import memory
from chatops.templating.sandbox import Namespace
from chatops.text import clean_text

FORM_KEY = "_form"
_EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_PHONE = r"^\+?[0-9][0-9 ()\-]{5,22}[0-9]$"


@dataclass(frozen=True)
class FormStep:
    """What one turn did to a form: the new state, and the field to ask for (None: complete or exhausted)."""

    state: dict[str, Any]
    ask: str | None = None
    error: str | None = None
    value: Any = None
    attempts: int = 0
    exhausted: bool = False
    missing: tuple[str, ...] = ()
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every required field holds a valid value."""
        return self.ask is None and not self.exhausted


def validate(name: str, spec: ExtractField, value: Any) -> tuple[Any, str | None]:
    """``(value as stored, None)`` when ``value`` fits the field, else ``(None, what is wrong)``."""
    if spec.type == "enum":
        for choice in spec.choices or ():
            if isinstance(value, str) and value.strip().casefold() == choice.casefold():
                return choice, None
        return None, f"{name} should be one of {', '.join(spec.choices or ())}"
    if spec.type in ("string", "email", "phone") and not isinstance(value, str):
        value = str(value)
    try:
        checked = _adapter(spec).validate_python(value)
    except ValidationError as exc:
        if spec.type in ("email", "phone"):
            return None, f"{name} is not {'an email address' if spec.type == 'email' else 'a phone number'}"
        message = str(exc.errors(include_url=False)[0]["msg"])
        return None, (name + message[5:] if message.startswith("Input") else f"{name}: {message}")
    if spec.pattern is not None and not re.search(spec.pattern, str(checked)):
        return None, f"{name} does not have the expected form"
    if isinstance(checked, time):
        return checked.strftime("%H:%M" if not checked.second else "%H:%M:%S"), None
    if isinstance(checked, date):
        return checked.isoformat(), None
    if spec.type == "phone":
        return ("+" if checked.startswith("+") else "") + re.sub(r"\D", "", checked), None
    return checked, None


@functools.lru_cache(maxsize=1024)
def _adapter(spec: ExtractField) -> TypeAdapter[Any]:
    low, high = spec.min, spec.max
    kind: Any
    if spec.type == "integer":
        kind = Annotated[int, Field(ge=low, le=high)]
    elif spec.type == "number":
        kind = Annotated[float, Field(ge=low, le=high, allow_inf_nan=False)]
    elif spec.type == "boolean":
        kind = bool
    elif spec.type == "date":
        kind = Annotated[date, Field(ge=_parsed(date, low), le=_parsed(date, high))]
    elif spec.type == "time":
        kind = Annotated[time, Field(ge=_parsed(time, low), le=_parsed(time, high))]
    elif spec.type == "email":
        kind = Annotated[str, StringConstraints(strip_whitespace=True, pattern=_EMAIL, max_length=254)]
    elif spec.type == "phone":
        kind = Annotated[str, StringConstraints(strip_whitespace=True, pattern=_PHONE)]
    else:
        min_length = int(low) if isinstance(low, int | float) else None
        max_length = int(high) if isinstance(high, int | float) else None
        kind = Annotated[str, StringConstraints(strip_whitespace=True, min_length=min_length, max_length=max_length)]
    return TypeAdapter(kind)


def _parsed(kind: type[date] | type[time], text: int | float | str | None) -> Any:
    return kind.fromisoformat(text) if isinstance(text, str) else None


def step(
    stage_name: str, stage: Stage, state: Mapping[str, Any], proposal: Mapping[str, Any], *, entered: bool, where: str
) -> FormStep:
    """Validate ``proposal`` (what the AI found) into ``state`` and decide whether to ask, finish or give up.

    ``entered``: the conversation came into the stage this turn (its message counts as no attempt). Raises
    StateError when a valid value still cannot be kept (memory limits).
    """
    progress = state.get(FORM_KEY)
    answering = not entered and isinstance(progress, dict) and progress.get("stage") == stage_name
    attempts = int(progress.get("attempts", 0)) if answering and isinstance(progress, dict) else 0
    kept: dict[str, Any] = {}
    errors: dict[str, tuple[str, Any]] = {}
    # Values already in the state (a transition's set:, an earlier turn) are checked too, so a completed form
    # holds only valid values whoever wrote them.
    given = {name: state[name] for name in stage.extract if state.get(name) is not None}
    for name, value in (given | {k: v for k, v in proposal.items() if v is not None}).items():
        spec = stage.extract.get(name)
        if spec is None:
            continue
        checked, error = validate(name, spec, value)
        if error is None:
            kept[name] = memory.storable(checked, where=f"{where}: extract {name}")
        else:
            errors[name] = (error, _shown(value))
    # An invalid value is forgotten, so the form asks for it again.
    current = {k: v for k, v in state.items() if k != FORM_KEY and k not in errors}
    new_state = memory.apply(current, kept, where=where)
    missing = tuple(name for name, spec in stage.extract.items() if spec.required and name not in new_state)
    pending = next((name for name in stage.extract if name in errors or name in missing), None)
    summary = {name: error for name, (error, _) in errors.items()}
    if pending is None:
        return FormStep(new_state, errors=summary)
    attempts += 1 if answering else 0
    if attempts >= stage.max_attempts and stage.on_invalid is not None:
        return FormStep(new_state, attempts=attempts, exhausted=True, missing=missing, errors=summary)
    error, value = errors.get(pending, (None, None))
    new_state[FORM_KEY] = {"stage": stage_name, "asking": pending, "attempts": attempts}
    return FormStep(new_state, pending, error, value, attempts, missing=missing, errors=summary)


def _shown(value: Any) -> str:
    """A rejected value as the ask template sees it: text, cut to 200 characters (it is not kept)."""
    text = clean_text(str(value))
    return text if len(text) <= 200 else text[:199] + "…"


def choice_buttons(stage: Stage, outcome: FormStep) -> tuple[Button, ...]:
    """Buttons for the choices of the enum field being asked (up to 10 fit); none for other fields."""
    spec = stage.extract.get(outcome.ask or "")
    if spec is None or not spec.choices or len(spec.choices) > MAX_BUTTONS:
        return ()
    return tuple(Button(choice, choice[:20]) for choice in spec.choices)


def asking(state: Mapping[str, Any], stage_name: str) -> str | None:
    """The field this stage asked for last turn (so "2" alone answers it), if the form is in progress."""
    progress = state.get(FORM_KEY)
    if isinstance(progress, dict) and progress.get("stage") == stage_name:
        field_name = progress.get("asking")
        return str(field_name) if field_name is not None else None
    return None


def button_proposal(stage: Stage, button: str | None) -> dict[str, Any]:
    """A tapped button whose id names a choice of an enum field fills that field (no AI needed)."""
    if button is None:
        return {}
    for name, spec in stage.extract.items():
        for choice in spec.choices or ():
            if choice.casefold() == button.casefold():
                return {name: choice}
    return {}


def form_namespace(stage: Stage, outcome: FormStep) -> Namespace:
    """The ``form`` variable of an ``ask:`` template."""
    return Namespace(
        "form",
        {
            "field": outcome.ask,
            "error": outcome.error,
            "value": outcome.value,
            "attempts": outcome.attempts,
            "max_attempts": stage.max_attempts,
            "missing": list(outcome.missing),
            "description": stage.extract[outcome.ask].description if outcome.ask else None,
        },
    )


def default_question(stage: Stage, outcome: FormStep) -> str:
    """The question when the stage has no ``ask:`` template for the field."""
    name = outcome.ask or ""
    spec = stage.extract.get(name)
    what = spec.description if spec is not None and spec.description else name.replace("_", " ")
    if spec is not None and spec.choices:
        what += f" ({', '.join(spec.choices)})"
    question = f"Please tell me {what}."
    return f"Sorry, {outcome.error}. {question}" if outcome.error else question
