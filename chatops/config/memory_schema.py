"""The conversation-memory keys of stages.yaml: ``set:``, ``clear:``, state conditions and ``extract:`` fields.

A conversation keeps named values (its ``state``) across turns. Stages and transitions write them with ``set:``
(a mapping of name → Jinja expression), stages forget them with ``clear:``, transitions test them with
``when: {state: …}`` / ``when: {if: …}``, and ``extract:`` stages fill them from the user's words through the AI.
docs/stages.md (Conversation memory) is the reference. Validators raise InvalidValue (chatops.config.bot turns
it into a located error).
"""

from __future__ import annotations

import keyword
import re
from typing import Any, Literal

from jinja2 import Environment, TemplateSyntaxError
from jinja2.parser import Parser
from pydantic import BaseModel, ConfigDict, Field, model_validator

from chatops.config.schedule import InvalidValue

#: At most this many names in one conversation's state, and this many characters in one value (as JSON): memory
#: holds what a conversation collected, not documents. Past either the turn fails with a StateError.
MAX_STATE_NAMES = 64
MAX_VALUE_CHARS = 2000
#: Names the engine keeps in ``conversations.state`` for itself (a form's progress); never set by a bot.
INTERNAL_PREFIX = "_"
FIELD_TYPES = ("string", "integer", "number", "boolean", "enum", "date", "time", "email", "phone")

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_RESERVED = {"true", "false", "none", "loop", "self", "super", "caller", "varargs", "kwargs"}
_PARSER_ENV = Environment(autoescape=False)  # noqa: S701 (parses expressions only; nothing is rendered)


def state_name(name: object, what: str = "state name") -> str:
    """``name`` if it can be a state name (an identifier starting with a letter), else InvalidValue."""
    text = str(name)
    if not _NAME.match(text) or keyword.iskeyword(text) or text in _RESERVED:
        raise InvalidValue(
            f"{what} '{text}' is not valid",
            hint="use letters, digits and underscores, starting with a letter (e.g. pizza or delivery_time)",
        )
    return text


def expression_syntax(source: str) -> None:
    """Raise InvalidValue when ``source`` is not one Jinja expression (``match.qty | int``, ``'Diavola'``)."""
    try:
        parser = Parser(_PARSER_ENV, source, state="variable")
        parser.parse_expression()
        if not parser.stream.eos:
            token = parser.stream.current
            raise TemplateSyntaxError(f"unexpected {token.value!r}", token.lineno)
    except TemplateSyntaxError as exc:
        raise InvalidValue(
            f"expression {source!r} does not parse: {exc.message}",
            hint='write a Jinja expression without braces, e.g. "match.qty | int"; quote text: "\'Diavola\'"',
        ) from None


def assignments(value: Any) -> dict[str, Any]:
    """Check a ``set:`` mapping: state names → a Jinja expression (text) or a literal (number, true, list …)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidValue(
            "set must be a mapping of state name → expression",
            hint='e.g. set: {qty: "match.qty | int", pizza: "match.pizza | title"}',
        )
    for name, source in value.items():
        try:
            state_name(name)
        except InvalidValue as exc:
            exc.at, exc.key = (name,), True
            raise
        if isinstance(source, str):
            try:
                expression_syntax(source)
            except InvalidValue as exc:
                exc.at = (name,)
                raise
    return dict(value)


def clear_names(value: Any) -> bool | tuple[str, ...]:
    """``clear: true`` (every name), ``false``, or a list of names (a single name is a list of one)."""
    if isinstance(value, bool):
        return value
    names = [value] if isinstance(value, str) else value
    if not isinstance(names, list | tuple):
        raise InvalidValue("clear is true or a list of state names", hint="e.g. clear: true, or clear: [qty, pizza]")
    for index, name in enumerate(names):
        try:
            state_name(name)
        except InvalidValue as exc:
            exc.at = (index,)
            raise
    return tuple(str(name) for name in names)


class _Keys(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StateTest(_Keys):
    """One test of ``when: {state: {name: …}}``: ``defined`` (true/false) and/or ``equals`` (a value)."""

    defined: bool | None = None
    equals: Any = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [key for key in data if key not in ("defined", "equals")]
            if unknown:
                raise InvalidValue(
                    f"unknown state test '{unknown[0]}'",
                    hint="a state test is {defined: true}, {defined: false} or {equals: <value>}",
                    at=(unknown[0],),
                    key=True,
                )
            if not data:
                raise InvalidValue("empty state test", hint="write {defined: true} or {equals: <value>}")
            return data
        raise InvalidValue(
            "a state test is a mapping", hint="e.g. when: {state: {pizza: {defined: true}}} or {qty: {equals: 2}}"
        )

    def holds(self, state: dict[str, Any], name: str) -> bool:
        """Whether ``state[name]`` passes this test (``equals`` implies defined; a kept null counts as defined)."""
        present = name in state
        if self.defined is not None and present != self.defined:
            return False
        return "equals" not in self.model_fields_set or (present and state[name] == self.equals)


class ExtractField(_Keys):
    """One field an ``extract:`` stage collects: its type, constraints, and what the AI is told about it."""

    type: Literal["string", "integer", "number", "boolean", "enum", "date", "time", "email", "phone"] = "string"
    required: bool = True
    description: str | None = None
    min: int | float | str | None = None
    max: int | float | str | None = None
    pattern: str | None = None
    choices: tuple[str, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> ExtractField:
        if self.type == "enum" and not self.choices:
            raise InvalidValue("an enum field needs choices", hint="e.g. choices: [Margherita, Diavola]")
        if self.choices and self.type != "enum":
            raise InvalidValue(
                f"choices are for enum fields, not {self.type}", hint="write type: enum", at=("choices",), key=True
            )
        if self.pattern is not None:
            if self.type not in ("string", "email", "phone"):
                raise InvalidValue(f"pattern is for text fields, not {self.type}", at=("pattern",), key=True)
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise InvalidValue(
                    f"pattern does not compile: {exc.msg} at position {exc.pos}", at=("pattern",)
                ) from None
        for bound in ("min", "max"):
            value = getattr(self, bound)
            if value is None:
                continue
            numeric = self.type in ("integer", "number", "string")
            if numeric and not isinstance(value, int | float):
                raise InvalidValue(f"{bound} of a {self.type} field is a number", at=(bound,))
            if self.type in ("date", "time") and not isinstance(value, str):
                raise InvalidValue(
                    f"{bound} of a {self.type} field is written as text",
                    hint='e.g. min: "2026-01-01" or min: "11:00" (quoted)',
                    at=(bound,),
                )
            if self.type in ("boolean", "enum", "email", "phone"):
                raise InvalidValue(f"{bound} does not apply to a {self.type} field", at=(bound,), key=True)
        return self
