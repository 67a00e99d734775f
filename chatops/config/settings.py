"""Process settings: environment variables with the ``CHATOPS_`` prefix, or a ``.env`` file; flags override.

Create one :class:`Settings` per process (``load_settings()``) and pass it down. Secrets are
``SecretStr`` so that they never show in reprs, logs or ``--json`` output; database URLs are shown
through :func:`mask_url`.

A malformed value is a ConfigError that names the variable and where its value came from (the environment, a line
of ``.env``, or a flag). ``load_settings(uses=…)`` fails only on the settings a caller uses (the others keep
their defaults), and :func:`configuration_warnings` lists ``CHATOPS_*`` names that are no setting (typos).
"""

from __future__ import annotations

import difflib
import io
import logging
import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv.parser import parse_stream
from pydantic import AliasChoices, Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatops.errors import ConfigError

DEFAULT_GRAPH_API_URL = "https://graph.facebook.com/v25.0"
_URL_SCHEMES = ("sqlite", "postgresql", "postgres")
ENV_FILE = Path(".env")
# CHATOPS_* names that the test suite and the benchmarks read, not chatops: never reported as unknown settings.
NOT_SETTINGS = frozenset({"CHATOPS_TEST_DATABASE_URL", "CHATOPS_REQUIRE_POSTGRES", "CHATOPS_BENCH_DATABASE_URL"})

# Settings that were replaced: setting one is an error that says what to set instead (docs/configuration.md).
REMOVED_SETTINGS = {
    "worker_lease_seconds": "removed: a worker now renews its lease while a turn runs, however long the AI takes; "
    "set CHATOPS_LEASE_SECONDS (how soon a crashed worker's conversation is taken over, default 20) and, for the "
    "longest a turn may run before it counts as stuck, CHATOPS_STUCK_SECONDS (default 600)",
    "sender_stale_seconds": "removed: the sender now renews its hold on a reply while the send runs; set "
    "CHATOPS_LEASE_SECONDS (how soon a reply left sending by a crashed sender is sent again, default 20)",
}


class Settings(BaseSettings):
    """Every setting of DESIGN.md section 5, typed. See docs/configuration.md for the reference."""

    model_config = SettingsConfigDict(
        env_prefix="CHATOPS_",
        env_file=ENV_FILE,
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = "sqlite:///chatops.db"
    stages: Path = Path("stages.yaml")
    templates: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    whatsapp_app_secret: SecretStr | None = None
    whatsapp_verify_token: SecretStr | None = None
    whatsapp_access_token: SecretStr | None = None
    whatsapp_phone_number_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)

    messenger_app_secret: SecretStr | None = None
    messenger_verify_token: SecretStr | None = None
    messenger_page_token: SecretStr | None = None

    graph_api_url: str = DEFAULT_GRAPH_API_URL
    graph_timeout: float = Field(default=10.0, gt=0)

    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "CHATOPS_OPENAI_API_KEY")
    )
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "CHATOPS_OPENAI_BASE_URL")
    )
    ai: Literal["openai", "offline"] | None = None
    # US dollars per million tokens, [input, output] per model (replay's cost columns); docs/replay.md.
    ai_prices: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"gpt-4o-mini": (0.15, 0.60), "gpt-4o": (2.50, 10.00), "gpt-4.1-mini": (0.40, 1.60)}
    )

    metrics_token: SecretStr | None = None
    # `chatops worker` serves GET /metrics on this port when set (0: any free port); docs/operations.md#metrics.
    worker_metrics_port: int | None = Field(default=None, ge=0, le=65535)
    worker_metrics_host: str = "127.0.0.1"
    sentry_dsn: SecretStr | None = None  # error tracking (chatops[sentry]); unset: off
    rate_limit_storage: str = "memory://"
    trusted_proxy_hops: int = Field(default=0, ge=0, le=10)  # reverse proxies whose X-Forwarded-For is believed
    api_rate_limit: str = "120/minute"  # per admin API key
    api_bad_key_limit: str = "10/minute"  # requests with a missing or wrong key, per client address
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    debounce_seconds: float = Field(default=0.0, ge=0)
    # With wake-ups (PostgreSQL LISTEN/NOTIFY), how often idle workers and the sender look for work anyway.
    poll_seconds: float = Field(default=5.0, gt=0)
    turn_max_attempts: int = Field(default=5, ge=1)
    # Leases on turns and sends (docs/operations.md "Crash recovery"): renewed every lease_seconds / 4 while the
    # work runs, free again lease_seconds after the last renewal; work running past stuck_seconds counts as stuck.
    lease_seconds: float = Field(default=20.0, ge=0.5)
    stuck_seconds: float = Field(default=600.0, gt=0)
    instance: str | None = None
    # Removed settings, kept only to say what replaced them (a value is an error naming the replacement).
    worker_lease_seconds: str | None = None
    sender_stale_seconds: str | None = None
    # Retention for `chatops prune` (docs/scaling.md); unset keeps that data for ever.
    retain_raw_days: float | None = Field(default=30.0, gt=0)
    retain_traces_days: float | None = Field(default=90.0, gt=0)
    retain_messages_days: float | None = Field(default=None, gt=0)

    @field_validator("retain_raw_days", "retain_traces_days", "retain_messages_days", mode="before")
    @classmethod
    def _keep_for_ever(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "never", "forever"):
            return None  # an empty value switches that retention off rather than being an error
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        scheme = value.split(":", 1)[0].split("+", 1)[0]
        if "://" not in value or scheme not in _URL_SCHEMES:
            raise ValueError("expected sqlite:///path/to.db or postgresql://user:password@host:port/database")
        return value

    @field_validator("graph_api_url", "openai_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @field_validator("instance")
    @classmethod
    def _instance_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9._:@-]{1,64}", value):
            raise ValueError("expected 1 to 64 letters, digits or . _ : @ - (a name for this process, e.g. worker-1)")
        return value

    @field_validator("worker_lease_seconds", "sender_stale_seconds")
    @classmethod
    def _removed(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            raise ValueError(REMOVED_SETTINGS[info.field_name or ""])
        return value

    @field_validator("api_rate_limit", "api_bad_key_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse

        parse(value)  # ValueError: "couldn't parse rate limit string …"
        return value

    @field_validator("whatsapp_phone_number_ids", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def ai_mode(self) -> Literal["openai", "offline"]:
        """``openai`` when chosen or when a key is set, else ``offline``."""
        if self.ai is not None:
            return self.ai
        return "openai" if self.openai_api_key else "offline"

    @property
    def templates_dir(self) -> Path:
        """Where templates live: ``CHATOPS_TEMPLATES``, or ``templates/`` beside the stages file."""
        return self.templates if self.templates is not None else self.stages.parent / "templates"


@dataclass(frozen=True)
class ChannelCredentials:
    """One channel's credentials. The channel is enabled when any of them is set."""

    channel: str
    app_secret: str | None
    verify_token: str | None
    send_token: str | None

    @property
    def enabled(self) -> bool:
        return any((self.app_secret, self.verify_token, self.send_token))

    @property
    def variables(self) -> tuple[str, str, str]:
        """The variables that configure this channel, for banners and hints."""
        prefix = f"CHATOPS_{self.channel.upper()}_"
        token = "ACCESS_TOKEN" if self.channel == "whatsapp" else "PAGE_TOKEN"
        return (f"{prefix}APP_SECRET", f"{prefix}VERIFY_TOKEN", f"{prefix}{token}")


def channel_credentials(settings: Settings, channel: str) -> ChannelCredentials:
    """The credentials of ``channel`` (``whatsapp`` or ``messenger``) as plain strings."""

    def reveal(secret: SecretStr | None) -> str | None:
        return secret.get_secret_value() or None if secret is not None else None

    if channel == "whatsapp":
        return ChannelCredentials(
            channel,
            reveal(settings.whatsapp_app_secret),
            reveal(settings.whatsapp_verify_token),
            reveal(settings.whatsapp_access_token),
        )
    return ChannelCredentials(
        channel,
        reveal(settings.messenger_app_secret),
        reveal(settings.messenger_verify_token),
        reveal(settings.messenger_page_token),
    )


def env_names(field: str) -> tuple[str, ...]:
    """The variables a setting is read from, first the documented one (``CHATOPS_X``, or the OpenAI SDK's name)."""
    choices = getattr(Settings.model_fields[field].validation_alias, "choices", None)
    return tuple(str(choice) for choice in choices) if choices else (f"CHATOPS_{field.upper()}",)


def _field_of(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else ""
    for field in Settings.model_fields:
        if name == field or name in env_names(field):
            return field
    return name


@dataclass(frozen=True)
class _DotEnv:
    """The ``.env`` file as chatops sees it: where each name is set, and the lines that are no ``NAME=value``."""

    path: Path
    lines: Mapping[str, int]  # upper-cased name → line number
    values: Mapping[str, str | None]
    unreadable: tuple[int, ...]


def _read_dotenv(path: Path) -> _DotEnv | None:
    """Parse ``.env`` like pydantic-settings does (python-dotenv). Raises ConfigError when it is not UTF-8 text."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path.resolve()} is not UTF-8 text ({exc.reason} at byte {exc.start})",
            hint="save it as UTF-8; chatops reads settings from it (see docs/configuration.md)",
        ) from None
    lines: dict[str, int] = {}
    values: dict[str, str | None] = {}
    unreadable: list[int] = []
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            unreadable.append(binding.original.line)
        elif binding.key is not None:
            lines[binding.key.upper()] = binding.original.line
            values[binding.key.upper()] = binding.value
    return _DotEnv(path.resolve(), lines, values, tuple(unreadable))


def _origin(field: str, dotenv: _DotEnv | None) -> tuple[str, str | None, str]:
    """Where ``field``'s value came from: (variable, value, ``in the environment`` or ``in /path/.env:LINE``)."""
    environment = {name.upper(): value for name, value in os.environ.items()}
    for name in env_names(field):  # the environment wins over .env, as in pydantic-settings
        if name.upper() in environment:
            return name, environment[name.upper()], "in the environment"
    for name in env_names(field):
        if dotenv is not None and name.upper() in dotenv.lines:
            return name, dotenv.values[name.upper()], f"in {dotenv.path}:{dotenv.lines[name.upper()]}"
    return env_names(field)[0], None, "(default)"


def _shows_value(field: str) -> bool:
    """Whether an error may repeat the value: never a secret, nor a URL (it may hold a password)."""
    info = Settings.model_fields[field]
    return "SecretStr" not in repr(info.annotation) and not field.endswith(("_url", "_storage"))


def _problem(
    error: Any, given: Mapping[str, Any], labels: Mapping[str, str], dotenv: _DotEnv | None
) -> tuple[str, str]:
    """(where: ``CHATOPS_X in the environment`` or ``--flag``, what: the message and the value when it may show)."""
    field = _field_of(error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if field in given:
        return labels.get(field, field), message
    name, value, origin = _origin(field, dotenv)
    shown = f" (got {value!r})" if value is not None and _shows_value(field) else ""
    return f"{name} {origin}", f"{message}{shown}"


def load_settings(
    *, uses: Collection[str] | None = None, labels: Mapping[str, str] | None = None, **overrides: Any
) -> Settings:
    """Read the environment (and ``.env``), apply ``overrides`` (from flags; ``None`` means "not given").

    ``uses`` names the settings the caller needs (default: all). A malformed value of another setting is not an
    error: that setting keeps its default. ``labels`` say how to call an override in an error (``--stages``).
    Raises ConfigError naming the variable, where its value came from and what is expected.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    dotenv = _read_dotenv(ENV_FILE)
    # python-dotenv logs unreadable .env lines on its own, without the path: configuration_warnings() says it.
    logging.getLogger("dotenv.main").setLevel(logging.ERROR)
    try:
        return Settings(**given)
    except ValidationError as exc:
        errors = exc.errors()
    relevant = [error for error in errors if uses is None or _field_of(error["loc"]) in uses]
    if relevant:
        problems = [_problem(error, given, labels or {}, dotenv) for error in relevant]
        hint = "see docs/configuration.md"
        if len(problems) > 1:
            hint += f"; also malformed: {', '.join(where for where, _ in problems[1:])}"
        where, what = problems[0]
        raise ConfigError(f"{where}: {what}", hint=hint) from None
    unused = {_field_of(error["loc"]) for error in errors}
    defaults = {field: Settings.model_fields[field].get_default(call_default_factory=True) for field in unused}
    return Settings(**{**defaults, **given})


def configuration_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """What looks wrong in the configuration without being an error: ``CHATOPS_*`` names that are no setting
    (with the nearest setting's name when there is one), and ``.env`` lines that are no ``NAME=value``.

    Raises ConfigError when ``.env`` is not UTF-8 text.
    """
    known = {name.upper() for field in Settings.model_fields for name in env_names(field)}
    dotenv = _read_dotenv(ENV_FILE)
    seen: dict[str, tuple[str, str]] = {}  # upper-cased name → (name as written, where)
    for name in environ if environ is not None else os.environ:
        seen.setdefault(name.upper(), (name, "in the environment"))
    if dotenv is not None:
        for name, line in dotenv.lines.items():
            seen.setdefault(name, (name, f"in {dotenv.path}:{line}"))
    suffixes = sorted(name.removeprefix("CHATOPS_") for name in known if name.startswith("CHATOPS_"))
    warnings = []
    for upper, (name, origin) in seen.items():
        if upper.startswith("CHATOPS_") and upper not in known | NOT_SETTINGS:
            close = difflib.get_close_matches(upper.removeprefix("CHATOPS_"), suffixes, n=1, cutoff=0.75)
            advice = f"did you mean CHATOPS_{close[0]}?" if close else "the settings are in docs/configuration.md"
            warnings.append(f"{name} {origin} is not a chatops setting and is ignored; {advice}")
    if dotenv is not None:
        warnings += [f"{dotenv.path}:{line} is not NAME=value and is ignored" for line in dotenv.unreadable]
    return warnings


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for banners, logs and errors), however malformed.

    Everything between ``user:`` and the *last* ``@`` is masked, since a password may hold ``@``, ``/`` or ``:``
    that no parser reads the way its author meant; so is a ``password=`` query parameter (libpq reads one).
    """
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        userinfo = rest[:at]
        user = re.split(r"[:@]", userinfo, maxsplit=1)[0]
        rest = (f"{user}:***" if user != userinfo else user) + rest[at:]
    rest = re.sub(r"(?i)([?&;]password=)[^&#;]*", r"\1***", rest)
    return f"{scheme}{separator}{rest}"
