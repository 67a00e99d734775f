"""Settings: environment, .env, overrides, validation errors, and secrets that never show."""

from __future__ import annotations

from pathlib import Path

import pytest

from chatops.config.settings import load_settings, mask_url
from chatops.errors import ConfigError


def test_defaults_match_design() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///chatops.db"
    assert settings.stages == Path("stages.yaml")
    assert settings.templates_dir == Path("templates")
    assert settings.graph_api_url == "https://graph.facebook.com/v25.0"
    assert settings.rate_limit_storage == "memory://"
    assert settings.ai_mode == "offline"


def test_environment_dotenv_and_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("CHATOPS_DATABASE_URL=postgresql://app:pw@db:5432/chatops\nOPENAI_API_KEY=sk-x\n")
    monkeypatch.setenv("CHATOPS_STAGES", "bots/shop.yaml")
    settings = load_settings()
    assert settings.database_url == "postgresql://app:pw@db:5432/chatops"
    assert settings.templates_dir == Path("bots/templates")
    assert settings.ai_mode == "openai"
    assert load_settings(database_url="sqlite:///other.db").database_url == "sqlite:///other.db"


def test_secrets_never_in_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_APP_SECRET", "topsecret-app")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-topsecret")
    settings = load_settings()
    assert "topsecret" not in repr(settings)
    assert "topsecret" not in str(settings.model_dump())
    assert settings.whatsapp_app_secret is not None
    assert settings.whatsapp_app_secret.get_secret_value() == "topsecret-app"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CHATOPS_DATABASE_URL", "mysql://x@h/db", "CHATOPS_DATABASE_URL: expected sqlite:///path/to.db or postgresql"),
        ("CHATOPS_GRAPH_API_URL", "graph.facebook.com", "CHATOPS_GRAPH_API_URL: expected an http:// or https:// URL"),
        ("CHATOPS_LOG_LEVEL", "LOUD", "CHATOPS_LOG_LEVEL: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
        ("CHATOPS_DEBOUNCE_SECONDS", "-1", "CHATOPS_DEBOUNCE_SECONDS: Input should be greater than or equal to 0"),
        ("OPENAI_BASE_URL", "localhost:8080", "OPENAI_BASE_URL: expected an http:// or https:// URL"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(expected)
    assert caught.value.hint == "see docs/configuration.md"


def test_phone_number_allow_list_is_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_PHONE_NUMBER_IDS", "106540352242922, 1122334455667")
    assert load_settings().whatsapp_phone_number_ids == ["106540352242922", "1122334455667"]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:s3cr%40t@db:5432/chatops", "postgresql://app:***@db:5432/chatops"),
        ("postgres://app@db/chatops", "postgres://app@db/chatops"),
        ("sqlite:///chatops.db", "sqlite:///chatops.db"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked
