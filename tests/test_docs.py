"""The documentation keeps up with the code: every setting, every command and every lint rule is documented."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.config.settings import Settings
from tests.conftest import ROOT

runner = CliRunner()


def env_names() -> list[str]:
    names = []
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        names.append(str(choices[0]) if choices else f"CHATOPS_{name.upper()}")
    return names


def commands() -> list[str]:
    return sorted(command.name or "" for command in app.registered_commands)


@pytest.mark.parametrize("variable", env_names())
def test_every_setting_is_in_the_configuration_reference(variable: str) -> None:
    assert f"`{variable}`" in (ROOT / "docs" / "configuration.md").read_text()


@pytest.mark.parametrize("command", commands())
def test_every_command_is_in_the_readme_and_has_an_example(command: str) -> None:
    assert re.search(rf"^\| `chatops {command}`", (ROOT / "README.md").read_text(), re.MULTILINE)
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Example" in result.stdout


def test_version_and_help() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert re.fullmatch(r"chatops \d+\.\d+\.\d+\n", result.stdout)
    result = runner.invoke(app, ["--help"], terminal_width=200)
    for command in commands():
        assert command in result.stdout
