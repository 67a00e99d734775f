"""Process settings: environment variables with the ``CHATOPS_`` prefix, or a ``.env`` file; flags override.

Create one :class:`Settings` per process (``load_settings()``) and pass it down. Secrets are
``SecretStr`` so that they never show in reprs, logs or ``--json`` output; database URLs are shown
through :func:`mask_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from chatops.errors import ConfigError

DEFAULT_GRAPH_API_URL = "https://graph.facebook.com/v25.0"
_URL_SCHEMES = ("sqlite", "postgresql", "postgres")


class Settings(BaseSettings):
    """Every setting of DESIGN.md section 5, typed. See docs/configuration.md for the reference."""

    model_config = SettingsConfigDict(
        env_prefix="CHATOPS_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
    )

    database_url: str = "sqlite:///chatops.db"
    stages: Path = Path("stages.yaml")
    templates: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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

    rate_limit_storage: str = "memory://"
    max_body_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    debounce_seconds: float = Field(default=0.0, ge=0)
    worker_lease_seconds: float = Field(default=120.0, gt=0)
    turn_max_attempts: int = Field(default=5, ge=1)
    sender_stale_seconds: float = Field(default=300.0, gt=0)

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


def _env_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    if field.isupper():  # reported under its alias, e.g. OPENAI_BASE_URL
        return field
    return f"CHATOPS_{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (and ``.env``), apply ``overrides`` (from flags; ``None`` means "not given").

    Raises ConfigError naming the variable and what is expected when a value is malformed.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = _env_name(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{name}: {message}", hint="see docs/configuration.md") from None


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (safe for banners, logs and errors)."""
    return re.sub(r"^([a-z0-9+]+://[^:/@]+):[^@]*@", r"\1:***@", url)
