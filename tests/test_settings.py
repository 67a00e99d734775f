"""Settings: environment, .env, overrides, validation errors, and secrets that never show."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.config.settings import configuration_warnings, load_settings, mask_url
from chatops.errors import ConfigError
from tests.conftest import ROOT

runner = CliRunner()


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
        (
            "CHATOPS_DATABASE_URL",
            "mysql://x@h/db",
            "CHATOPS_DATABASE_URL in the environment: expected sqlite:///path/to.db or postgresql",
        ),
        (
            "CHATOPS_GRAPH_API_URL",
            "graph.facebook.com",
            "CHATOPS_GRAPH_API_URL in the environment: expected an http:// or https:// URL",
        ),
        (
            "CHATOPS_LOG_LEVEL",
            "LOUD",
            "CHATOPS_LOG_LEVEL in the environment: Input should be 'DEBUG', 'INFO', 'WARNING' or 'ERROR' (got 'LOUD')",
        ),
        (
            "CHATOPS_DEBOUNCE_SECONDS",
            "-1",
            "CHATOPS_DEBOUNCE_SECONDS in the environment: Input should be greater than or equal to 0 (got '-1')",
        ),
        (
            "OPENAI_BASE_URL",
            "localhost:8080",
            "OPENAI_BASE_URL in the environment: expected an http:// or https:// URL",
        ),
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


# Through the CLI: where a bad value came from, unknown names, and settings a command does not use ------------------


@pytest.fixture
def example_bot(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_a_bad_value_says_where_it_came_from(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    Path(".env").write_text("# local settings\nCHATOPS_DEBOUNCE_SECONDS=soon\nCHATOPS_TURN_MAX_ATTEMPTS=0\n")
    result = runner.invoke(app, ["worker"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: CHATOPS_DEBOUNCE_SECONDS in {tmp_path}/.env:2: Input should be a valid number, unable to parse "
        "string as a number (got 'soon')\n"
        f"Hint: see docs/configuration.md; also malformed: CHATOPS_TURN_MAX_ATTEMPTS in {tmp_path}/.env:3\n",
    )
    monkeypatch.setenv("CHATOPS_DEBOUNCE_SECONDS", "-1")  # the environment wins over .env
    result = runner.invoke(app, ["worker"])
    assert result.stderr.splitlines()[0] == (
        "Error: CHATOPS_DEBOUNCE_SECONDS in the environment: Input should be greater than or equal to 0 (got '-1')"
    )
    result = runner.invoke(app, ["migrate", "--database-url", "mysql://app:hunter2@db/chatops"])
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: --database-url: expected sqlite:///path/to.db or postgresql://user:password@host:port/database\n"
        "Hint: see docs/configuration.md\n",
    )


def test_secrets_and_urls_are_never_repeated_in_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_DATABASE_URL", "mysql://app:hunter2@db/chatops")
    result = runner.invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: CHATOPS_DATABASE_URL in the environment: expected sqlite:///")
    assert "hunter2" not in result.stderr


def test_unknown_chatops_names_are_warned_once_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch, example_bot: Path
) -> None:
    monkeypatch.setenv("CHATOPS_DEBOUNCE_SECONDZ", "2")
    monkeypatch.setenv("CHATOPS_COLOUR", "blue")
    Path(".env").write_text("CHATOPS_STAGE=shop.yaml\nexport CHATOPS_LOG_LEVEL=INFO\nnot a setting line\nOTHER=1\n")
    result = runner.invoke(app, ["lint-templates"])
    assert result.exit_code == 0
    assert result.stderr.splitlines() == [
        "Warning: CHATOPS_DEBOUNCE_SECONDZ in the environment is not a chatops setting and is ignored; "
        "did you mean CHATOPS_DEBOUNCE_SECONDS?",
        "Warning: CHATOPS_COLOUR in the environment is not a chatops setting and is ignored; "
        "the settings are in docs/configuration.md",
        f"Warning: CHATOPS_STAGE in {example_bot}/.env:1 is not a chatops setting and is ignored; "
        "did you mean CHATOPS_STAGES?",
        f"Warning: {example_bot}/.env:3 is not NAME=value and is ignored",
    ]


def test_commands_do_not_fail_on_settings_they_do_not_use(monkeypatch: pytest.MonkeyPatch, example_bot: Path) -> None:
    monkeypatch.setenv("CHATOPS_DATABASE_URL", "postgres:/broken")
    monkeypatch.setenv("CHATOPS_TURN_MAX_ATTEMPTS", "0")
    monkeypatch.setenv("CHATOPS_GRAPH_API_URL", "graph.facebook.com")
    result = runner.invoke(app, ["lint-templates"])
    assert (result.exit_code, result.stderr) == (0, "")
    monkeypatch.setenv("CHATOPS_DATABASE_URL", "sqlite:///ok.db")
    result = runner.invoke(app, ["migrate"])
    assert (result.exit_code, result.stderr) == (0, "")
    result = runner.invoke(app, ["worker"])  # the worker uses them all
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: CHATOPS_GRAPH_API_URL in the environment: expected an http://")


def test_help_never_reads_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    Path(".env").write_bytes(b"CHATOPS_STAGES=\xff\xfe\n")
    monkeypatch.setenv("CHATOPS_LOG_LEVEL", "LOUD")
    for args in (["--help"], ["serve", "--help"], ["lint-templates", "--help"], ["--version"]):
        result = runner.invoke(app, args)
        assert (result.exit_code, result.stderr) == (0, ""), args


def test_a_dotenv_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    Path(".env").write_bytes(b"CHATOPS_STAGES=caf\xe9.yaml\n")
    result = runner.invoke(app, ["lint-templates"])
    assert (result.exit_code, result.stderr) == (
        2,
        f"Error: {tmp_path}/.env is not UTF-8 text (invalid continuation byte at byte 18)\n"
        "Hint: save it as UTF-8; chatops reads settings from it (see docs/configuration.md)\n",
    )


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


@pytest.mark.parametrize(
    ("variable", "replacement"),
    [
        ("CHATOPS_WORKER_LEASE_SECONDS", "CHATOPS_LEASE_SECONDS"),
        ("CHATOPS_SENDER_STALE_SECONDS", "CHATOPS_LEASE_SECONDS"),
    ],
)
def test_a_removed_setting_is_an_error_naming_its_replacement(
    monkeypatch: pytest.MonkeyPatch, variable: str, replacement: str
) -> None:
    monkeypatch.setenv(variable, "120")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith(f"{variable} in the environment: removed: ")
    assert f"set {replacement}" in str(caught.value)
    assert configuration_warnings() == []  # known names: not reported as typos as well


def test_the_instance_name_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_INSTANCE", "web 1/a")
    with pytest.raises(ConfigError, match="CHATOPS_INSTANCE in the environment: expected 1 to 64 letters"):
        load_settings()
    monkeypatch.setenv("CHATOPS_INSTANCE", "web-1")
    assert load_settings().instance == "web-1"
