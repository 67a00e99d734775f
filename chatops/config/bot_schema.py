"""The schema of stages.yaml: pydantic models, frozen, unknown keys refused with the allowed ones as a hint.

Validators raise :class:`~chatops.config.schedule.InvalidValue` (message, hint, and where below the node);
``chatops.config.bot`` turns those into located BotDefinitionErrors. docs/stages.md documents every key.
"""

from __future__ import annotations

import difflib
import keyword
import re
import zoneinfo
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from chatops.config.memory_schema import (
    ExtractField,
    StateTest,
    assignments,
    clear_names,
    expression_syntax,
    state_name,
)
from chatops.config.schedule import BusinessHours, InvalidValue, parse_business_hours, parse_duration
from chatops.config.yaml_source import SourceLocation, YamlSource

#: Built-in template variables and the attributes each one has. The templating layer provides exactly these.
BUILTIN_VARIABLES: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "user": frozenset({"id", "name", "phone", "channel"}),
        "conversation": frozenset({"id", "stage", "turn_count", "started_at", "last_messages"}),
        "clock": frozenset({"now", "today", "weekday", "time", "hour", "timezone", "business_hours"}),
        "message": frozenset(
            {
                *("id", "channel", "kind", "text", "at", "button", "button_title", "caption"),
                *("media_id", "media_url", "mime_type", "filename", "voice"),
                *("latitude", "longitude", "location_name", "address", "contacts"),
                *("emoji", "reacted_to", "unsupported_type", "reply_to", "forwarded"),
            }
        ),
    }
)
#: Conversation memory in templates: ``state`` (the values kept across turns) and ``match`` (this turn's regex groups).
MEMORY_VARIABLES = ("state", "match", "form")
#: What an ``ask:`` template of an ``extract:`` stage reads from ``form`` (chatops.engine.forms fills it).
FORM_ATTRIBUTES = frozenset({"field", "error", "value", "attempts", "max_attempts", "missing", "description"})
BUILTIN_PROVIDER_KINDS = ("http", "sql", "lookup")
#: Options each built-in provider kind accepts beside the common keys, and which of them are required.
PROVIDER_OPTIONS: Mapping[str, Mapping[str, bool]] = MappingProxyType(
    {
        "http": MappingProxyType(
            {"url": True, "method": False, "headers": False, "body": False, "select": False, "missing": False}
        ),
        "sql": MappingProxyType(
            {"database_url": True, "query": True, "params": False, "result": False, "max_rows": False}
        ),
        "lookup": MappingProxyType(
            {"file": True, "key": True, "key_column": False, "case_sensitive": False, "default": False}
        ),
    }
)
#: Options rendered per turn (a string, or a mapping of strings). http values are always templates; sql params and
#: the lookup key are Jinja expressions (``user.id``) unless they contain ``{{ }}``/``{% %}``.
PROVIDER_TEMPLATE_OPTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"http": ("url", "headers", "body"), "sql": ("params",), "lookup": ("key",)}
)
PROVIDER_EXPRESSION_KINDS = frozenset({"sql", "lookup"})
MAX_BUTTONS = 10  # WhatsApp: 3 reply buttons or a 10-row list; Messenger: 13 quick replies. 10 fits both.
TEMPLATE_INCLUDE = re.compile(r"""\{%-?\s*(?:include|import|from|extends)\s+["']([^"']+)["']""")

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")
_DOTTED = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_ENTRY_POINT = re.compile(r"^[A-Za-z_][\w.\-]*$")
_TEMPLATE_NAME = re.compile(r"^[^/\\][^\\]*$")
_RESERVED = {"true", "false", "none", "loop", "self", "super", "caller", "varargs", "kwargs"}

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _seconds(value: object) -> float:
    return parse_duration(value).total_seconds()


def _listify(value: object) -> object:
    return [value] if isinstance(value, str) else value


Assignments = Annotated[dict[str, Any], BeforeValidator(assignments)]


Seconds = Annotated[float, BeforeValidator(_seconds)]
TemplateName = Annotated[str, Field(min_length=1)]


def did_you_mean(name: str, choices: Any, *, label: str = "defined") -> str:
    """A hint for an unknown ``name``: the closest of ``choices``, else the list of them."""
    options = [str(choice) for choice in choices]
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    if not options:
        return f"none are {label}"
    shown = ", ".join(options[:12]) + (", …" if len(options) > 12 else "")
    return f"{label}: {shown}"


def _article(kind: str) -> str:
    return "a" if kind == "lookup" else "an"  # an http, an sql (read "es-q-el")


def _identifier(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name) or keyword.iskeyword(name) or name in _RESERVED:
        raise InvalidValue(
            f"{what} '{name}' is not a valid template name",
            hint="use letters, digits and underscores, starting with a letter (e.g. order_status)",
        )
    return name


def _template_file(name: str) -> str:
    if not _TEMPLATE_NAME.match(name) or ".." in Path(name).parts:
        raise InvalidValue(
            f"template name '{name}' must be a path inside the templates folder",
            hint="write it relative to templates/, e.g. welcome.j2 or partials/footer.j2",
        )
    return name


class _Strict(BaseModel):
    """Frozen, unknown keys refused with the list of allowed ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    _internal: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def yaml_keys(cls) -> list[str]:
        """The keys this section accepts in stages.yaml, in documentation order."""
        return [field.alias or name for name, field in cls.model_fields.items() if name not in cls._internal]

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            allowed = cls.yaml_keys()
            for key in data:
                if key not in allowed:
                    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
                    hint = (
                        (f"did you mean '{close[0]}'? Allowed" if close else "allowed") + " keys: " + ", ".join(allowed)
                    )
                    raise InvalidValue(f"unknown key '{key}'", hint=hint, at=(key,), key=True)
        return data


class AISettings(_Strict):
    """AI defaults for every prompt stage (``ai:``)."""

    model: str = Field(default="gpt-4o-mini", min_length=1)
    temperature: float = Field(default=0.3, ge=0, le=2)
    max_tokens: int = Field(default=300, gt=0)
    history: int = Field(default=10, ge=0)
    timeout: Seconds = 30.0


class AIOverrides(_Strict):
    """Per-stage AI overrides (``stages.<name>.ai``); unset keys fall back to ``ai:``."""

    model: str | None = Field(default=None, min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, gt=0)
    history: int | None = Field(default=None, ge=0)


class UserRateLimit(_Strict):
    """``bot.rate_limit``: how many messages a user may send before the bot holds the rest back.

    See chatops.engine.flood."""

    messages: str = Field(description="e.g. 10/minute, 30/hour")
    reply: str = Field(
        default="You are sending messages faster than we can read them; please wait a moment.", min_length=1
    )

    @field_validator("messages")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise InvalidValue(
                f"invalid rate {value!r}", hint="a count per period: 10/minute, 30/hour, 100/day"
            ) from None
        return value


class BotSettings(_Strict):
    """The ``bot:`` section."""

    name: str = Field(min_length=1)
    start: str
    timezone: str = "UTC"
    session_timeout: Duration = timedelta(hours=24)
    stale_after: Duration = timedelta(hours=1)
    max_replies: int = Field(default=3, ge=1, le=10)
    business_hours: Annotated[BusinessHours | None, BeforeValidator(parse_business_hours)] = None
    rate_limit: UserRateLimit | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            hint = did_you_mean(value, sorted(zoneinfo.available_timezones()), label="examples")
            raise InvalidValue(
                f"unknown timezone '{value}'", hint=f"{hint} Use an IANA name such as Europe/Berlin or UTC"
            ) from None
        return value

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        """The bot's timezone."""
        return zoneinfo.ZoneInfo(self.timezone)

    def open_at(self, moment: datetime) -> bool | None:
        """Whether ``moment`` (timezone-aware) is within business hours; ``None`` when none are configured."""
        if self.business_hours is None:
            return None
        return self.business_hours.is_open(moment.astimezone(self.tzinfo))


class Button(_Strict):
    """A reply button, list row or quick reply: ``id`` comes back when tapped, ``title`` is shown."""

    id: str = Field(min_length=1, max_length=200)
    title: str = Field(min_length=1)
    description: str | None = None

    @field_validator("title")
    @classmethod
    def _short_title(cls, value: str) -> str:
        if len(value) > 20:
            raise InvalidValue(
                f"button title '{value}' is {len(value)} characters; at most 20 fit",
                hint="WhatsApp reply buttons and Messenger quick replies show 20 characters; "
                "put the details in the message or in a description",
            )
        return value

    @field_validator("description")
    @classmethod
    def _short_description(cls, value: str | None) -> str | None:
        if value is not None and len(value) > 72:
            raise InvalidValue(
                f"button description is {len(value)} characters; at most 72 fit",
                hint="WhatsApp list rows show 72 characters of description",
            )
        return value


class Condition(_Strict):
    """One ``when:`` of a transition; exactly one key is given."""

    button: str | None = Field(default=None, min_length=1)
    keywords: Annotated[tuple[str, ...] | None, BeforeValidator(_listify)] = None
    regex: str | None = None
    intent: str | None = None
    state: dict[str, StateTest] | None = None
    test: str | None = Field(default=None, alias="if")
    default: bool | None = None

    @field_validator("keywords")
    @classmethod
    def _some_keywords(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None and not any(word.strip() for word in value):
            raise InvalidValue("keywords is empty", hint="list at least one word: keywords: [agent, human]")
        return value

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise InvalidValue(
                    f"regex does not compile: {exc.msg} at position {exc.pos}",
                    hint="Python re syntax; quote the pattern in single quotes so backslashes stay as written",
                ) from None
        return value

    @field_validator("state")
    @classmethod
    def _state_names(cls, value: dict[str, StateTest] | None) -> dict[str, StateTest] | None:
        if value is not None and not value:
            raise InvalidValue("state condition is empty", hint="e.g. when: {state: {pizza: {defined: true}}}")
        for name in value or {}:
            try:
                state_name(name)
            except InvalidValue as exc:
                exc.at, exc.key = (name,), True
                raise
        return value

    @field_validator("test")
    @classmethod
    def _test_parses(cls, value: str | None) -> str | None:
        if value is not None:
            expression_syntax(value)
        return value

    @field_validator("intent")
    @classmethod
    def _intent_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_\-]+", value):
            raise InvalidValue(f"intent '{value}' must be one word", hint="e.g. intent: refund or order_status")
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> Condition:
        given = [
            field.alias or name for name, field in type(self).model_fields.items() if getattr(self, name) is not None
        ]
        # `state` may guard one other condition: {button: "yes", state: {qty: {defined: true}}} needs both.
        if len(given) != 1 and not (len(given) == 2 and "state" in given):
            raise InvalidValue(
                "a condition has exactly one of button, keywords, regex, intent, state, if, default"
                + (f" (found {', '.join(given)})" if given else ""),
                hint="write one transition per condition (state: may guard one other); they are tried in order",
            )
        if self.default is False:
            raise InvalidValue("default must be true", hint="write `when: {default: true}` or remove it")
        return self

    @property
    def kind(self) -> Literal["button", "keywords", "regex", "intent", "state", "if", "default"]:
        """Which condition this is."""
        for name in ("button", "keywords", "regex", "intent"):
            if getattr(self, name) is not None:
                return name
        if self.test is not None:
            return "if"
        return "state" if self.state is not None else "default"

    @property
    def groups(self) -> tuple[str, ...]:
        """The named groups of a ``regex`` condition (``match.<name>`` in this turn), in pattern order."""
        if self.regex is None:
            return ()
        return tuple(re.compile(self.regex).groupindex)


class Transition(_Strict):
    """``- when: {...}`` / ``to: stage`` / ``set: {name: expression}`` (kept in state when it is taken)."""

    when: Condition
    to: str
    assign: Assignments = Field(default_factory=dict, alias="set")


class Stage(_Strict):
    """One stage of the conversation."""

    reply: TemplateName | None = None
    prompt: TemplateName | None = None
    buttons: tuple[Button, ...] = ()
    list_button: str | None = Field(default=None, min_length=1, max_length=20)
    transitions: tuple[Transition, ...] = ()
    next: str | None = None
    on_error: TemplateName | None = None
    handoff: bool = False
    # A handoff stage: without an operator message for this long the bot takes over again at handoff_return.
    handoff_timeout: Duration | None = None
    handoff_return: str | None = None
    ai: AIOverrides | None = None
    providers: tuple[str, ...] | None = None
    clear: Annotated[bool | tuple[str, ...], BeforeValidator(clear_names)] = False
    assign: Assignments = Field(default_factory=dict, alias="set")
    extract: dict[str, ExtractField] = Field(default_factory=dict)
    ask: TemplateName | dict[str, TemplateName] | None = None
    max_attempts: int = Field(default=3, ge=1, le=20)
    on_invalid: str | None = None
    # Templates (and so the AI) see a WhatsApp number masked; a stage that must show or send it sets this.
    reveal_phone: bool = False

    @field_validator("extract")
    @classmethod
    def _field_names(cls, value: dict[str, ExtractField]) -> dict[str, ExtractField]:
        for name in value:
            try:
                state_name(name, "field name")
            except InvalidValue as exc:
                exc.at, exc.key = (name,), True
                raise
        return value

    @field_validator("ask")
    @classmethod
    def _ask_templates(cls, value: str | dict[str, str] | None) -> str | dict[str, str] | None:
        if isinstance(value, str):
            return _template_file(value)
        for name, template in (value or {}).items():
            try:
                _template_file(template)
            except InvalidValue as exc:
                exc.at = (name,)
                raise
        return value

    @field_validator("reply", "prompt", "on_error")
    @classmethod
    def _inside_templates(cls, value: str | None) -> str | None:
        return _template_file(value) if value is not None else None

    @model_validator(mode="after")
    def _consistent(self) -> Stage:
        if self.reply is not None and self.prompt is not None:
            raise InvalidValue(
                "a stage has a reply or a prompt, not both",
                hint="reply: a fixed message from a template; prompt: a system prompt, the AI writes the reply",
                at=("prompt",),
                key=True,
            )
        if len(self.buttons) > MAX_BUTTONS:
            raise InvalidValue(
                f"{len(self.buttons)} buttons; at most {MAX_BUTTONS} fit",
                hint="WhatsApp shows up to 3 reply buttons or a list of up to 10 rows (Messenger: 13 quick "
                "replies); split the choice over two stages",
                at=("buttons", MAX_BUTTONS),
            )
        if self.buttons and self.reply is None and self.prompt is None:
            raise InvalidValue(
                "buttons need a message to attach to",
                hint="add reply: <template> or prompt: <template>",
                at=("buttons",),
            )
        for field_name in ("id", "title"):
            seen: set[str] = set()
            for index, button in enumerate(self.buttons):
                value = getattr(button, field_name)
                if value in seen:
                    raise InvalidValue(
                        f"two buttons have the {field_name} '{value}'",
                        hint=f"button {field_name}s must be unique within a stage",
                        at=("buttons", index, field_name),
                    )
                seen.add(value)
        if self.next is not None and self.transitions:
            raise InvalidValue(
                "a stage has next or transitions, not both",
                hint="next: move on right after replying; transitions: wait for the user's answer "
                "(use `when: {default: true}` as the fallback)",
                at=("next",),
                key=True,
            )
        if not self.handoff:
            for key in ("handoff_timeout", "handoff_return"):
                if getattr(self, key) is not None:
                    raise InvalidValue(
                        f"{key} belongs to a stage with handoff: true",
                        hint="it says when and where the bot takes a handed-off conversation back",
                        at=(key,),
                        key=True,
                    )
        if not self.extract:
            for key in ("ask", "on_invalid"):
                if getattr(self, key) is not None:
                    raise InvalidValue(
                        f"{key} belongs to a stage with extract:",
                        hint="declare the fields to collect under extract:",
                        at=(key,),
                        key=True,
                    )
        if isinstance(self.ask, dict):
            for name in self.ask:
                if name not in self.extract:
                    raise InvalidValue(
                        f"ask for '{name}', which the stage does not extract",
                        hint=did_you_mean(name, self.extract, label="extract fields"),
                        at=("ask", name),
                        key=True,
                    )
        for index, transition in enumerate(self.transitions[:-1]):
            if transition.when.default:
                raise InvalidValue(
                    "transitions after a `default` one can never match",
                    hint="move the default transition last",
                    at=("transitions", index + 1),
                )
        return self

    @property
    def intents(self) -> tuple[str, ...]:
        """The intents the AI may choose among, in the order of the transitions."""
        found = [t.when.intent for t in self.transitions if t.when.intent is not None]
        return tuple(dict.fromkeys(found))

    @property
    def ask_templates(self) -> tuple[str, ...]:
        """The ``ask:`` templates, without repeats."""
        if self.ask is None:
            return ()
        return (self.ask,) if isinstance(self.ask, str) else tuple(dict.fromkeys(self.ask.values()))

    def ask_for(self, field: str) -> str | None:
        """The template that asks for ``field`` (the stage's one ``ask:`` or the field's own), if any."""
        return self.ask if isinstance(self.ask, str) or self.ask is None else self.ask.get(field)

    @property
    def template_names(self) -> tuple[str, ...]:
        """Template files this stage names (reply or prompt, its ask templates, then on_error)."""
        named = (self.reply, self.prompt, *self.ask_templates, self.on_error)
        return tuple(name for name in named if name is not None)

    @property
    def targets(self) -> tuple[str, ...]:
        """Stages this stage can move to."""
        found = tuple(t.to for t in self.transitions) + ((self.next,) if self.next else ())
        found += (self.handoff_return,) if self.handoff_return else ()
        return found + ((self.on_invalid,) if self.on_invalid else ())

    @property
    def state_set(self) -> frozenset[str]:
        """The state names this stage writes when it answers: ``set:`` and ``extract:`` fields."""
        return frozenset(self.assign) | frozenset(self.extract)


class ProviderSpec(_Strict):
    """A dynamic variable: ``name`` exposes the attributes in ``provides``; kind options go to ``options``."""

    name: str
    use: str = Field(min_length=1)
    provides: tuple[str, ...] = Field(min_length=1)
    help: dict[str, str] = Field(default_factory=dict)
    timeout: Duration = timedelta(seconds=2)
    cache_ttl: Duration | None = None
    retries: int = Field(default=1, ge=0, le=10)
    options: dict[str, Any] = Field(default_factory=dict)

    _internal: ClassVar[frozenset[str]] = frozenset({"options"})

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # Kind-specific keys sit beside the common ones in YAML; they are collected into `options`.
        if not isinstance(data, dict):
            return data
        common = cls.yaml_keys()
        options = {key: value for key, value in data.items() if key not in common}
        kind = data.get("use")
        if isinstance(kind, str) and kind in PROVIDER_OPTIONS:
            allowed = PROVIDER_OPTIONS[kind]
            for key in options:
                if key not in allowed:
                    keys = [*common, *allowed]
                    close = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.6)
                    raise InvalidValue(
                        f"unknown key '{key}' for {_article(kind)} {kind} provider",
                        hint=(f"did you mean '{close[0]}'? Allowed" if close else "allowed")
                        + " keys: "
                        + ", ".join(keys),
                        at=(key,),
                        key=True,
                    )
            for key, required in allowed.items():
                if required and key not in options:
                    raise InvalidValue(
                        f"{_article(kind)} {kind} provider needs '{key}'",
                        hint=f"add `{key}:`; see docs/stages.md#providers",
                    )
        return {**{key: value for key, value in data.items() if key in common}, "options": options}

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        _identifier(value, "provider name")
        if value in BUILTIN_VARIABLES or value in MEMORY_VARIABLES:
            raise InvalidValue(
                f"provider name '{value}' is a built-in variable",
                hint="built-ins: " + ", ".join(BUILTIN_VARIABLES) + "; choose another name",
            )
        return value

    @field_validator("use")
    @classmethod
    def _kind(cls, value: str) -> str:
        if value in BUILTIN_PROVIDER_KINDS or _DOTTED.match(value):
            return value
        close = difflib.get_close_matches(value, BUILTIN_PROVIDER_KINDS, n=1, cutoff=0.6)
        if close or not _ENTRY_POINT.match(value):
            raise InvalidValue(
                f"unknown provider kind '{value}'",
                hint=(f"did you mean '{close[0]}'? " if close else "")
                + "use http, sql, lookup, a dotted path (package.module:factory) or an entry point name",
            )
        return value

    @field_validator("provides")
    @classmethod
    def _attributes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for index, name in enumerate(value):
            try:
                _identifier(name, "attribute")
            except InvalidValue as exc:
                exc.at = (index,)
                raise
        return value

    @model_validator(mode="after")
    def _help_for_provided(self) -> ProviderSpec:
        for key in self.help:
            if key not in self.provides:
                raise InvalidValue(
                    f"help for '{key}', which the provider does not provide",
                    hint=did_you_mean(key, self.provides, label="provides"),
                    at=("help", key),
                    key=True,
                )
        return self

    @property
    def template_options(self) -> dict[str, Any]:
        """The options whose values are templates (``url``, ``headers``, ``params``, ``key`` …)."""
        names = PROVIDER_TEMPLATE_OPTIONS.get(self.use, ())
        return {name: self.options[name] for name in names if name in self.options}


class WhatsAppTemplate(_Strict):
    """The approved WhatsApp template sent when the 24-hour customer-service window is closed."""

    name: str

    @field_validator("name")
    @classmethod
    def _approved_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,512}", value):
            raise InvalidValue(
                f"template name '{value}' is not a WhatsApp template name",
                hint="use the name approved in WhatsApp Manager: lowercase letters, digits and underscores",
            )
        return value

    language: str = Field(default="en_US", pattern=r"^[a-z]{2,3}(_[A-Z]{2})?$")
    params: tuple[str, ...] = ()


class BotDefinition(_Strict):
    """stages.yaml, checked. ``path``, ``templates_dir``, ``version`` and ``template_files`` are set by the loader."""

    bot: BotSettings
    ai: AISettings = Field(default_factory=AISettings)
    variables: dict[str, Any] = Field(default_factory=dict)
    providers: tuple[ProviderSpec, ...] = ()
    stages: dict[str, Stage] = Field(min_length=1)
    whatsapp_template: WhatsAppTemplate | None = None

    path: Path = Path("stages.yaml")
    templates_dir: Path = Path("templates")
    version: str = ""
    template_files: tuple[str, ...] = ()

    _internal: ClassVar[frozenset[str]] = frozenset({"path", "templates_dir", "version", "template_files"})
    _source: YamlSource | None = PrivateAttr(default=None)

    @field_validator("variables")
    @classmethod
    def _variable_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            try:
                _identifier(str(name), "variable")
            except InvalidValue as exc:
                exc.at, exc.key = (name,), True
                raise
            if name in BUILTIN_VARIABLES or name in MEMORY_VARIABLES:
                raise InvalidValue(
                    f"variable '{name}' is a built-in variable",
                    hint="built-ins: " + ", ".join(BUILTIN_VARIABLES) + "; choose another name",
                    at=(name,),
                    key=True,
                )
        return value

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: dict[str, Stage]) -> dict[str, Stage]:
        for name in value:
            if not _STAGE_NAME.match(str(name)):
                raise InvalidValue(
                    f"stage name '{name}' is not valid",
                    hint="use letters, digits, '_' and '-' (e.g. order_status)",
                    at=(name,),
                    key=True,
                )
        return value

    @model_validator(mode="after")
    def _provider_names(self) -> BotDefinition:
        seen: set[str] = set()
        for index, provider in enumerate(self.providers):
            if provider.name in seen:
                raise InvalidValue(
                    f"two providers are named '{provider.name}'",
                    hint="provider names must be unique",
                    at=("providers", index, "name"),
                )
            if provider.name in self.variables:
                raise InvalidValue(
                    f"provider '{provider.name}' has the name of a static variable",
                    hint="rename the provider or the variable",
                    at=("providers", index, "name"),
                )
            seen.add(provider.name)
        return self

    @property
    def state_names(self) -> frozenset[str]:
        """Every state name the bot can set (``set:`` of stages and transitions, ``extract:`` fields)."""
        names: set[str] = set()
        for stage in self.stages.values():
            names |= stage.state_set
            for transition in stage.transitions:
                names |= set(transition.assign)
        return frozenset(names)

    def location(self, path: tuple[str | int, ...], *, key: bool = False) -> SourceLocation | None:
        """Where the node at ``path`` (e.g. ``("stages", "triage", "reply")``) is written in stages.yaml.

        Falls back to the nearest written ancestor; ``None`` when the definition was not loaded from a file.
        """
        return self._source.location(path, key=key) if self._source is not None else None

    @property
    def source(self) -> YamlSource | None:
        """The parsed stages.yaml with its node positions (``None`` when built in code)."""
        return self._source

    def provider(self, name: str) -> ProviderSpec:
        """The provider called ``name``; raises KeyError."""
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(name)

    def providers_for(self, stage: str) -> tuple[ProviderSpec, ...]:
        """The providers a stage may use: its ``providers`` list, or all of them."""
        wanted = self.stages[stage].providers
        if wanted is None:
            return self.providers
        return tuple(p for p in self.providers if p.name in wanted)

    def ai_for(self, stage: str) -> AISettings:
        """The AI settings of a stage: ``ai:`` with the stage's overrides applied."""
        overrides = self.stages[stage].ai
        if overrides is None:
            return self.ai
        changes = {key: value for key, value in overrides.model_dump().items() if value is not None}
        return self.ai.model_copy(update=changes)

    def template_variables(
        self, stage: str | None = None, *, on_error: bool = False
    ) -> dict[str, frozenset[str] | None]:
        """Variables a template may use, mapped to their attributes (``None``: attributes are not checked).

        Built-ins and static ``variables`` always; providers only for a stage's reply/prompt (restricted to its
        ``providers``), not for ``on_error`` (the provider may be what failed) nor for stage-less templates
        (provider options, ``whatsapp_template`` params).
        """
        names: dict[str, frozenset[str] | None] = dict(BUILTIN_VARIABLES)
        names["state"] = self.state_names
        names["match"] = None  # lint follows each stage's regex groups itself
        for name, value in self.variables.items():
            names[name] = (
                frozenset(map(str, value)) | frozenset({"items", "keys", "values", "get"})
                if (isinstance(value, dict))
                else None
            )
        if stage is not None and not on_error:
            for provider in self.providers_for(stage):
                names[provider.name] = frozenset(provider.provides)
        return names
