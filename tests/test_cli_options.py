"""Options every command shares: the global options in either place, and choices that answer in our own words."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatops import __version__
from chatops.cli.app import app
from tests.conftest import ROOT

runner = CliRunner()
COMMANDS = sorted(command.name or "" for command in app.registered_commands)


@pytest.fixture(autouse=True)
def example_bot(tmp_path: Path) -> None:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)


def usage_error(stderr: str) -> str:
    """The text of the error box Typer draws for a usage error, as one line (the box wraps at 80 columns)."""
    inside = [line.strip("│ ") for line in stderr.splitlines() if line.startswith("│")]
    return re.sub(r"\s+", " ", " ".join(inside))


def test_stages_after_the_command_wins_over_before() -> None:
    result = runner.invoke(app, ["lint-templates", "--stages", "missing.yaml"])
    assert (result.exit_code, result.stderr) == (
        2,
        "Error: missing.yaml does not exist\nHint: pass the path of your stages.yaml, or set CHATOPS_STAGES\n",
    )
    result = runner.invoke(app, ["--stages", "missing.yaml", "lint-templates", "--stages", "stages.yaml"])
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("No problems found")
    result = runner.invoke(app, ["--stages", "stages.yaml", "lint-templates", "--stages", "missing.yaml"])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: missing.yaml does not exist\n")


def test_database_url_after_the_command_wins_over_before() -> None:
    result = runner.invoke(
        app, ["--database-url", "sqlite:///before.db", "migrate", "--status", "--database-url", "sqlite:///after.db"]
    )
    assert result.exit_code == 1  # an empty database is behind
    assert result.stdout.splitlines()[0] == "database: sqlite:///after.db"
    assert not Path("before.db").exists()


def test_log_level_and_version_after_the_command() -> None:
    result = runner.invoke(app, ["lint-templates", "--log-level", "debug"])
    assert result.exit_code == 0, result.stderr
    result = runner.invoke(app, ["serve", "--version"])
    assert (result.exit_code, result.stdout) == (0, f"chatops {__version__}\n")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_lists_the_global_options_in_its_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0
    assert "Global options (also accepted before the command)" in result.stdout
    for option in ("--stages", "--database-url", "--log-level", "--version"):
        assert option in result.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["lint-templates", "--format", "xml"],
            "Invalid value for '--format': 'xml' is not one of 'text', 'json', 'github'.",
        ),
        (
            ["simulate", "--channel", "telegram", "hi"],
            "Invalid value for '--channel': 'telegram' is not one of 'whatsapp', 'messenger'.",
        ),
        (
            ["--log-level", "loud", "lint-templates"],
            "Invalid value for '--log-level': 'loud' is not one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'.",
        ),
        (
            ["migrate", "--log-level", "loud"],
            "Invalid value for '--log-level': 'loud' is not one of 'DEBUG', 'INFO', 'WARNING', 'ERROR'.",
        ),
    ],
)
def test_a_bad_choice_lists_the_choices(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert usage_error(result.stderr) == expected


def test_choices_accept_any_letter_case() -> None:
    result = runner.invoke(app, ["lint-templates", "--format", "JSON"])
    assert (result.exit_code, result.stdout) == (0, "[]\n")
