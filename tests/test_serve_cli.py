"""`chatops serve` and `chatops worker` refuse to start on a bad configuration, before serving anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatops.cli.app import app
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture(autouse=True)
def example_bot(tmp_path: Path) -> None:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)


def test_a_channel_with_a_token_but_no_app_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_ACCESS_TOKEN", "token")
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: the whatsapp channel has credentials but no app secret: webhooks cannot be verified",
        "Hint: set CHATOPS_WHATSAPP_APP_SECRET (Meta app → Settings → Basic), or pass --insecure-skip-signature "
        "for local development only",
    ]


def test_serve_refuses_a_schema_that_is_behind() -> None:
    result = runner.invoke(app, ["--database-url", "sqlite:///fresh.db", "serve", "--port", "0"])
    assert result.exit_code == 1
    assert "Error: the database schema is behind: at empty, head is" in result.stderr
    assert "Hint: run `chatops migrate` (or start with `chatops serve --migrate`)" in result.stderr


def test_worker_reports_an_invalid_bot_with_its_location(tmp_path: Path) -> None:
    stages = ROOT.joinpath("stages.yaml").read_text().replace("start: welcome", "start: welcom")
    (tmp_path / "stages.yaml").write_text(stages)
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: stages.yaml:5:10:")
    assert "welcom" in result.stderr
