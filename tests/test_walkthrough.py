"""docs/ordering-bot.md: every `$ chatops …` command of the walkthrough, run in order in a copy of examples/pizza,
prints exactly what the page shows."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

from typer.testing import CliRunner

from chatops.cli.app import app
from tests.conftest import ROOT

PAGE = ROOT / "docs" / "ordering-bot.md"


def commands() -> list[tuple[list[str], str]]:
    """(arguments, expected stdout) for every command of every console block, in page order."""
    found = []
    for block in re.findall(r"```console\n(.*?)```", PAGE.read_text(), re.DOTALL):
        for chunk in re.split(r"(?m)^\$ ", block)[1:]:
            command, _, output = chunk.partition("\n")
            words = shlex.split(command)
            assert words[0] == "chatops", command
            found.append((words[1:], output))
    return found


def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    shutil.copy(ROOT / "examples" / "pizza" / "stages.yaml", tmp_path / "stages.yaml")
    shutil.copytree(ROOT / "examples" / "pizza" / "templates", tmp_path / "templates")
    steps = commands()
    assert len(steps) == 13
    runner = CliRunner()
    for args, expected in steps:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, (args, result.stderr)
        assert result.stdout == expected, args
