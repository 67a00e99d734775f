"""AI extraction for ``extract:`` stages: the strict JSON schema, the messages, parsing, and the offline rules.

The model is asked for every declared field at once, each one nullable (``null``: not in the message), through
OpenAI structured outputs (``response_format`` ``json_schema`` with ``strict: true``). What comes back is only a
proposal: :mod:`chatops.engine.forms` validates it against the declaration before anything is stored.

The offline responder extracts deterministically with :func:`offline_values`, field by field from the user's text:

- ``integer``: the first whole number; ``number``: the first number (``2.5`` or ``2,5``);
- ``boolean``: yes / yeah / yep / ok / sure / true → true, no / nope / false → false (whole words);
- ``enum``: the first choice named in the text (whole words, any case);
- ``date``: an ISO date ``2026-01-31``; ``time``: ``19:30`` (or ``7:30``);
- ``email``: the first address; ``phone``: the first run of 7+ digits (spaces, dashes, a leading ``+``);
- ``string``: the whole text, only for the field the stage just asked for.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from chatops.ai.prompt import ChatRequest, Message
from chatops.config.memory_schema import ExtractField

_SCHEMA_NAME = "extracted_fields"
_JSON_TYPES = {
    "string": "string",
    "integer": "integer",
    "number": "number",
    "boolean": "boolean",
    "enum": "string",
    "date": "string",
    "time": "string",
    "email": "string",
    "phone": "string",
}
_FORMAT_WORDS = {
    "date": "a date as YYYY-MM-DD",
    "time": "a time of day as HH:MM (24 hours)",
    "email": "an email address",
    "phone": "a phone number with country code if given",
}
_YES = frozenset({"yes", "yeah", "yep", "y", "ok", "okay", "sure", "true"})
_NO = frozenset({"no", "nope", "n", "false"})


def field_summary(name: str, field: ExtractField) -> str:
    """One line telling the model what ``name`` is: type, constraints and description."""
    kind = _FORMAT_WORDS.get(field.type, field.type)
    parts = [f"{name}: {kind}"]
    if field.choices:
        parts.append("one of " + ", ".join(field.choices))
    if field.min is not None:
        parts.append(f"at least {field.min}")
    if field.max is not None:
        parts.append(f"at most {field.max}")
    if field.description:
        parts.append(field.description)
    return "; ".join(parts)


def extraction_response_format(fields: Mapping[str, ExtractField]) -> dict[str, Any]:
    """The ``response_format``: an object with every field, each its JSON type or null (strict mode needs all
    properties required and no others)."""
    properties: dict[str, Any] = {}
    for name, field in fields.items():
        schema: dict[str, Any] = {"type": [_JSON_TYPES[field.type], "null"], "description": field_summary(name, field)}
        if field.choices:
            schema["enum"] = [*field.choices, None]
        properties[name] = schema
    return {
        "type": "json_schema",
        "json_schema": {
            "name": _SCHEMA_NAME,
            "strict": True,
            "schema": {
                "type": "object",
                "properties": properties,
                "required": list(fields),
                "additionalProperties": False,
            },
        },
    }


def build_extract_messages(
    request: ChatRequest, fields: Mapping[str, ExtractField], *, asking: str | None
) -> list[Message]:
    """Messages asking the model to fill ``fields`` from the user's last message (``asking``: the field the bot
    just asked for, so a bare answer like "2" is understood). The user's text stays its own message."""
    lines = "\n".join(f"- {field_summary(name, field)}" for name, field in fields.items())
    instruction = (
        "Extract these fields from the user's last message. Use null for a field the message does not give; "
        f"never guess. Reply with the JSON object only.\n{lines}"
    )
    if asking is not None:
        instruction += f"\n\nThe assistant has just asked the user for: {asking}."
    if request.system_prompt:
        instruction += f"\n\nContext: the assistant's instructions for this step are:\n{request.system_prompt}"
    messages: list[Message] = [{"role": "system", "content": instruction}]
    messages.extend({"role": role, "content": text} for role, text in request.history)
    messages.append({"role": "user", "content": request.user_text})
    return messages


def parse_extraction(content: str | None, fields: Mapping[str, ExtractField]) -> dict[str, Any]:
    """The declared fields the model's JSON answer gives (nulls and unknown names dropped); ``{}`` when the answer
    is not a JSON object (a model may ignore the schema: the form then simply asks again)."""
    if not content:
        return {}
    try:
        answer = json.loads(content, parse_constant=_no_constant)
    except ValueError:
        return {}
    if not isinstance(answer, dict):
        return {}
    return {name: answer[name] for name in fields if answer.get(name) is not None}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON data")  # NaN/Infinity: Python reads them, databases refuse them


def offline_values(text: str, fields: Mapping[str, ExtractField], *, asking: str | None) -> dict[str, Any]:
    """The offline responder's extraction (rules in the module docstring). Deterministic; never raises."""
    found: dict[str, Any] = {}
    words = re.findall(r"\w+", text.casefold())
    for name, field in fields.items():
        value = _offline_value(text, words, field, asking=asking == name)
        if value is not None:
            found[name] = value
    return found


def _offline_value(text: str, words: Sequence[str], field: ExtractField, *, asking: bool) -> Any:
    kind = field.type
    if kind == "integer":
        hit = re.search(r"(?<![\d.,])-?\d+(?![\d.,]\d)", text)
        return int(hit.group()) if hit else None
    if kind == "number":
        hit = re.search(r"-?\d+(?:[.,]\d+)?", text)
        return float(hit.group().replace(",", ".")) if hit else None
    if kind == "boolean":
        for word in words:
            if word in _YES:
                return True
            if word in _NO:
                return False
        return None
    if kind == "enum":
        for choice in field.choices or ():
            if re.search(rf"(?<!\w){re.escape(choice.casefold())}(?!\w)", text.casefold()):
                return choice
        return None
    patterns = {
        "date": r"\b\d{4}-\d{2}-\d{2}\b",
        "time": r"\b\d{1,2}:\d{2}\b",
        "email": r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+",
        "phone": r"\+?\d[\d \-]{5,}\d",
    }
    if kind in patterns:
        hit = re.search(patterns[kind], text)
        return hit.group() if hit else None
    stripped = text.strip()
    return stripped if asking and stripped else None
