"""`chatops doctor`: one line per check, pass/warn/fail with hints, --json, exit 1 on a failure; network checks
against the loopback Graph API and OpenAI fakes and a real HTTP server for the verify-token handshake."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner
from werkzeug.serving import make_server

from chatops.cli.app import app
from chatops.config.settings import load_settings
from chatops.web.app import create_app
from tests.conftest import ROOT
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI
from tests.webhook import ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN, Webhook

runner = CliRunner()
PAGE_TOKEN = "test-page-token"


@pytest.fixture(autouse=True)
def example_bot(tmp_path: Path) -> None:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI(token=ACCESS_TOKEN) as fake:
        yield fake


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=frozenset({"gpt-4o-mini"})) as fake:
        yield fake


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch, database_url: str, graph: FakeGraphAPI, openai_fake: FakeOpenAI) -> str:
    """A deployment with WhatsApp, OpenAI and a migrated database, every service a loopback fake."""
    for name, value in {
        "CHATOPS_DATABASE_URL": database_url,
        "CHATOPS_WHATSAPP_APP_SECRET": APP_SECRET,
        "CHATOPS_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "CHATOPS_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
        "CHATOPS_WHATSAPP_PHONE_NUMBER_IDS": PHONE_NUMBER_ID,
        "CHATOPS_GRAPH_API_URL": graph.graph_api_url,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": openai_fake.base_url,
    }.items():
        monkeypatch.setenv(name, value)
    return database_url


def doctor(*args: str) -> tuple[int, dict[str, dict[str, Any]]]:
    result = runner.invoke(app, ["doctor", "--json", *args])
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    return result.exit_code, checks


@pytest.fixture
def server(configured: str) -> Iterator[str]:
    """The real Flask app over real HTTP (werkzeug on loopback), with the configured verify token."""
    settings = load_settings()
    http = make_server("127.0.0.1", 0, create_app(settings, None), threaded=True)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}"
    http.shutdown()
    thread.join(5)


def test_a_healthy_deployment_passes_every_check(server: str, graph: FakeGraphAPI, openai_fake: FakeOpenAI) -> None:
    code, checks = doctor("--url", server)
    assert code == 0, checks
    assert {name: check["status"] for name, check in checks.items()} == {
        "settings": "pass",
        "templates": "pass",
        "whatsapp": "pass",
        "database": "pass",
        "schema": "pass",
        "connections": checks["connections"]["status"],  # a busy shared test server may be short of connections
        "clock": "pass",
        "workers": "pass",
        "outbound": "pass",
        "whatsapp token": "pass",
        "openai gpt-4o-mini": "pass",
        "whatsapp handshake": "pass",
    }
    assert checks["workers"]["detail"].startswith("idle: nothing waiting; no turn yet")
    # The cheapest authenticated read: the phone number node, with the token as a bearer, never in the URL.
    (request,) = graph.requests
    assert (request.method, request.path, request.headers["authorization"]) == (
        "GET",
        f"/{PHONE_NUMBER_ID}",
        f"Bearer {ACCESS_TOKEN}",
    )
    assert "access_token" not in request.query
    assert [r.path for r in openai_fake.requests] == []  # models.retrieve is a GET: not recorded as a completion


def test_the_table_says_what_failed_and_what_to_do(configured: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_ACCESS_TOKEN", "expired-token")
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    failing = [line.split() for line in lines if line.startswith("FAIL")]
    assert [words[1:3] for words in failing] == [["whatsapp", "token"]]
    index = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    assert "refused: Error validating access token" in lines[index]
    assert "(code 190)" in lines[index]
    assert "hint: make a long-lived system-user token" in lines[index + 1]
    assert "expired-token" not in result.stdout
    assert lines[-1].endswith("1 fail")


def test_a_model_the_key_cannot_use_fails(configured: str, tmp_path: Path) -> None:
    stages = tmp_path / "stages.yaml"
    stages.write_text(stages.read_text().replace("model: gpt-4o-mini", "model: gpt-nonexistent"))
    code, checks = doctor()
    assert code == 1
    assert checks["openai gpt-nonexistent"]["status"] == "fail"
    assert checks["openai gpt-nonexistent"]["detail"] == "model 'gpt-nonexistent' is not available to this key"


def test_offline_makes_no_request(configured: str, graph: FakeGraphAPI) -> None:
    code, checks = doctor("--offline", "--url", "http://127.0.0.1:9")
    assert code == 0
    assert (
        checks["graph api"]["status"] == checks["openai"]["status"] == checks["webhook handshake"]["status"] == "skip"
    )
    assert graph.requests == []


def test_a_server_with_another_verify_token_fails_the_handshake(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_VERIFY_TOKEN", "not-the-servers")
    code, checks = doctor("--url", server)
    assert code == 1
    assert checks["whatsapp handshake"]["status"] == "fail"
    assert checks["whatsapp handshake"]["detail"].endswith("refused this verify token (403)")


def test_messages_waiting_with_no_worker_fail(configured: str) -> None:
    settings = load_settings()
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    client = create_app(settings, None, clock=lambda: long_ago).test_client()
    assert Webhook(client).send_text("hello?").status_code == 200
    code, checks = doctor("--offline")
    assert code == 1
    assert checks["workers"]["status"] == "fail"
    assert checks["workers"]["detail"].startswith("1 message(s) waiting, the oldest due for 10 min; no turn yet")
    assert "start `chatops worker`" in checks["workers"]["hint"]


def test_a_database_behind_the_code_fails_schema(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_DATABASE_URL", empty_database_url)
    if empty_database_url.startswith("sqlite"):
        engine = sa.create_engine(empty_database_url)
        with engine.connect():
            pass  # the file exists, empty
        engine.dispose()
    code, checks = doctor("--offline")
    assert code == 1
    assert checks["schema"]["status"] == "fail"
    assert checks["schema"]["hint"] == "run `chatops migrate` (back up first: docs/backups.md)"
    assert "workers" not in checks  # the queues of an old schema are not read


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    code, checks = doctor("--offline", "--database-url", "sqlite:///nowhere.db")
    assert code == 1
    assert checks["database"] == {
        "name": "database",
        "status": "fail",
        "detail": "SQLite file nowhere.db does not exist",
        "hint": "`chatops migrate` creates it",
    }
    assert not (tmp_path / "nowhere.db").exists()


def test_malformed_settings_are_one_failed_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_LEASE_SECONDS", "soon")
    code, checks = doctor()
    assert code == 1
    assert list(checks) == ["settings"]
    assert checks["settings"]["detail"].startswith("CHATOPS_LEASE_SECONDS in the environment:")
