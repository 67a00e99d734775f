"""``chatops simulate``: the exact transcript a user sees, through the real route, parser, inbox and worker."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner, Result
from werkzeug.serving import make_server

from chatops.channels.graph import GraphClient
from chatops.cli.app import app
from chatops.config.bot import load_bot
from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.db.migrate import head_revision, history
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from chatops.engine.runtime import Background
from chatops.engine.sender import OutboxSender
from chatops.web.app import create_app
from chatops.web.state import utc_now
from tests.conftest import ROOT
from tests.fakes.graph_api import FakeGraphAPI

MONDAY = "2026-01-05T10:00"  # naive: Europe/Berlin, the example bot's timezone; inside business hours
WELCOME = """\
Alex: where is my order?
Northwind Support: Hi Alex! Welcome to Northwind support.

  What can I do for you?
  [Track my order] [Opening hours] [Talk to a person]
  (--button track | hours | human)
stage: (new) → welcome → triage
"""
HOURS = """\
Alex: [button hours]
Northwind Support: Our flagship store is open today (Monday) from 09:00 to 18:00.

  Online support: Mon–Fri 9:00–17:00, Sat 10:00–14:00.
stage: triage → store_hours → triage
"""
HANDOFF = """\
Alex: [button human]
Northwind Support: Thanks, Alex! A colleague from the Northwind team will reply here shortly.

  You can also write to help@northwind.example.
stage: triage → handoff
"""


@pytest.fixture(autouse=True)
def example_bot(tmp_path: Path) -> Path:
    """A copy of the example bot in the test's directory (the cwd), where ``stages.yaml`` is looked up."""
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


@pytest.fixture
def simulate(database_url: str) -> Any:
    """Runs ``chatops --database-url URL simulate ARGS…`` and returns the result."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, ["--database-url", database_url, "simulate", *args], input=input)

    return run


def rows(database_url: str, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            selected = [table.c[name] for name in columns]
            return [tuple(row) for row in connection.execute(sa.select(*selected).order_by(table.c.id))]
    finally:
        engine.dispose()


def test_a_conversation_across_runs(simulate: Any, database_url: str, backend: str) -> None:
    first = simulate("where is my order?", "--at", MONDAY)
    assert (first.exit_code, first.stdout) == (0, WELCOME), first.stderr
    hours = simulate("--button", "hours", "--at", "2026-01-05T10:01")
    assert (hours.exit_code, hours.stdout) == (0, HOURS)
    handoff = simulate("--button", "human", "--at", "2026-01-05T10:02")
    assert handoff.stdout == HANDOFF
    waiting = simulate("anyone there?", "--at", "2026-01-05T10:03")
    assert waiting.stdout == (
        "Alex: anyone there?\n(no reply: the conversation was handed to a person; --fresh starts it again)\n"
    )
    fresh = simulate("where is my order?", "--fresh", "--at", "2026-01-05T10:04")
    assert fresh.stdout == WELCOME

    assert [status for (status,) in rows(database_url, outbound_messages, "status")] == ["sent"] * 4
    stages = rows(database_url, turns, "stage_before", "stage_after")
    assert stages == [(None, "triage"), ("triage", "triage"), ("triage", "handoff"), (None, "triage")]
    inbound = rows(database_url, inbound_messages, "kind", "status", "error")
    assert inbound[3] == ("text", "skipped", "skipped by `chatops simulate --fresh`")
    assert [row[:2] for row in inbound] == [
        ("text", "done"),
        ("button", "done"),
        ("button", "done"),
        ("text", "skipped"),
        ("text", "done"),
    ]
    assert rows(database_url, conversations, "stage", "mode", "turn_count") == [("triage", "bot", 4)]


def test_replies_are_settled_and_never_delivered_later(simulate: Any, database_url: str) -> None:
    assert simulate("hello", "--at", MONDAY).exit_code == 0
    assert simulate("a question", "--at", "2026-01-05T10:01").exit_code == 0
    outbound = rows(database_url, outbound_messages, "id", "status", "provider_message_id", "sent_at")
    assert [(status, provider_id) for _, status, provider_id, _ in outbound] == [
        ("sent", f"simulated.{outbound[0][0]}"),
        ("sent", f"simulated.{outbound[1][0]}"),
    ]
    # A real server's sender on the same database, with real credentials: it finds nothing to deliver.
    settings = load_settings(database_url=database_url, whatsapp_access_token="real-token")
    engine = create_db_engine(database_url)
    with FakeGraphAPI() as fake, OutboxSender(settings, engine, GraphClient(httpx_client(), base_url=fake.url)) as s:
        assert s.send_due() == 0
        assert fake.requests == []
    engine.dispose()


def httpx_client() -> Any:
    import httpx

    return httpx.Client(timeout=5)


def test_json_has_the_trace_and_the_graph_requests(simulate: Any) -> None:
    result = simulate("where is my order?", "--at", MONDAY, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert list(data) == [
        "channel",
        "conversation_id",
        "user",
        "message",
        "webhook_status",
        "mode",
        "turn_id",
        "stage_before",
        "stage_after",
        "stage_answered",
        "user_text",
        "replies",
        "variables",
        "prompt",
        "model",
        "parameters",
        "intent",
        "ai_response",
        "usage",
        "latency_ms",
        "template_versions",
        "bot_version",
        "started_at",
        "finished_at",
        "state_before",
        "state_after",
        "state_changes",
        "extraction",
        "error",
        "state",
        "earlier_turns",
        "note",
    ]
    assert data["user"] == {"id": "15550001234", "name": "Alex"}
    assert data["message"]["id"].startswith("wamid.simulated.")
    assert data["message"] | {"id": None} == {
        "id": None,
        "text": "where is my order?",
        "button": None,
        "location": None,
        "status": "done",
        "error": None,
    }
    assert (data["stage_before"], data["stage_after"], data["mode"], data["error"]) == (None, "triage", "bot", None)
    assert data["variables"]["clock"]["weekday"] == "Monday"
    assert data["started_at"] == "2026-01-05T09:00:00+00:00"
    [reply] = data["replies"]
    assert reply["status"] == "sent"
    assert reply["provider_message_id"] == f"simulated.{reply['id']}"
    assert reply["request"]["url"] == "https://graph.facebook.com/v25.0/100000000000001/messages"
    body = reply["request"]["json"]
    assert body["to"] == "15550001234"
    assert body["type"] == "interactive"
    assert [b["reply"] for b in body["interactive"]["action"]["buttons"]] == [
        {"id": "track", "title": "Track my order"},
        {"id": "hours", "title": "Opening hours"},
        {"id": "human", "title": "Talk to a person"},
    ]

    ai = json.loads(simulate("what about refunds", "--at", "2026-01-05T10:01", "--json").stdout)
    assert (ai["stage_before"], ai["intent"], ai["model"]) == ("triage", "refund", "offline")
    assert ai["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert ai["prompt"][0]["role"] == "system"


def test_a_day_later_the_session_restarts(simulate: Any) -> None:
    assert simulate("where is my order?", "--at", MONDAY).stdout == WELCOME
    assert "stage: triage → questions → triage" in simulate("thanks", "--at", "2026-01-05T10:05").stdout
    later = simulate("where is my order?", "--at", "2026-01-06T10:06")
    assert later.stdout == WELCOME  # 24h after the last turn: back to the start


def test_naive_at_is_in_the_bots_timezone(simulate: Any) -> None:
    # 08:30 in Berlin is before opening; the same wall time in UTC (09:30 Berlin) would be open.
    berlin = simulate("hi", "--at", "2026-01-05T08:30").stdout
    assert "Our team is offline right now" in berlin
    utc = simulate("hi", "--fresh", "--at", "2026-01-05T08:30:00+00:00").stdout
    assert "offline" not in utc


def test_interactive_keeps_the_conversation(simulate: Any) -> None:
    lines = "where is my order?\n\n/button hours\n/location 52.52,13.40\n/nonsense\n/quit\nnot sent\n"
    result = simulate("--interactive", "--at", MONDAY, input=lines)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == (
        WELCOME
        + HOURS
        + "Alex: [location 52.52, 13.4]\n"
        + 'Northwind Support: [offline AI] You said: "[location 52.52, 13.4]" · Prompt: "You answer general '
        'questions about Northwind." · Set OPENAI_API_KEY for real replies.\n'
        + "stage: triage → questions → triage\n"
        + "cannot do '/nonsense' here. Type a message, or /button ID, /location LAT,LON, /fresh, /quit (or end of "
        "input).\n"
    )
    as_json = simulate("-i", "--json", "--at", "2026-01-05T10:10", input="one\ntwo")  # EOF ends too
    objects = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [o["message"]["text"] for o in objects] == ["one", "two"]


def test_messenger(simulate: Any, database_url: str) -> None:
    first = simulate("hi", "--channel", "messenger", "--at", MONDAY)
    assert first.stdout.splitlines()[:2] == ["15550001234: hi", "Northwind Support: Hi! Welcome to Northwind support."]
    data = json.loads(
        simulate("--channel", "messenger", "--button", "hours", "--at", "2026-01-05T10:01", "--json").stdout
    )
    assert data["stage_before"] == "triage"
    assert "Monday" in data["replies"][0]["body"]["text"]
    assert data["replies"][0]["request"]["url"] == "https://graph.facebook.com/v25.0/me/messages"
    assert data["replies"][0]["request"]["json"]["recipient"] == {"id": "15550001234"}
    postback = simulate("--channel", "messenger", "--button", "getstarted", "--at", "2026-01-05T10:02")
    assert postback.exit_code == 0
    raw = rows(database_url, inbound_messages, "raw")
    assert raw[0][0]["message"]["text"] == "hi"
    assert raw[1][0]["message"]["quick_reply"] == {"payload": "hours"}  # offered as a quick reply: tapped one
    assert raw[2][0]["postback"]["payload"] == "getstarted"  # never offered: a menu postback
    welcome = json.loads(simulate("--channel", "messenger", "hi", "--fresh", "--json", "--at", MONDAY).stdout)
    quick = welcome["replies"][0]["request"]["json"]["message"]["quick_replies"]
    assert [q["payload"] for q in quick] == ["track", "hours", "human"]


def test_whatsapp_button_and_location_payloads(simulate: Any, database_url: str) -> None:
    simulate("hi", "--at", MONDAY)
    simulate("--button", "hours", "--at", "2026-01-05T10:01")
    simulate("--location", "52.52, 13.40", "--at", "2026-01-05T10:02")
    raw = [row[0] for row in rows(database_url, inbound_messages, "raw")]
    assert raw[1]["interactive"] == {"type": "button_reply", "button_reply": {"id": "hours", "title": "Opening hours"}}
    first_reply = rows(database_url, outbound_messages, "provider_message_id")[0][0]
    assert raw[1]["context"]["id"] == first_reply  # the press answers the message that showed the button
    assert raw[2]["location"] == {"latitude": 52.52, "longitude": 13.4}


def test_a_whatsapp_list_and_a_press_on_one_of_its_rows(simulate: Any, database_url: str, example_bot: Path) -> None:
    stages = example_bot / "stages.yaml"
    four = (
        "      - {id: human, title: Talk to a person}\n"
        "      - {id: faq, title: Questions, description: 'Returns, delivery and more'}\n"
        "    list_button: Menu\n"
        "    next: triage\n"
    )
    text = stages.read_text()
    stages.write_text(text.replace("      - {id: human, title: Talk to a person}\n    next: triage\n", four, 1))
    result = simulate("hi", "--at", MONDAY)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[3:9] == [
        "  What can I do for you?",
        "  [Menu]",
        "    • Track my order",
        "    • Opening hours",
        "    • Talk to a person",
        "    • Questions — Returns, delivery and more",
    ]
    data = json.loads(simulate("--button", "faq", "--at", "2026-01-05T10:01", "--json").stdout)
    assert data["message"]["status"] == "done"
    pressed = rows(database_url, inbound_messages, "raw")[1][0]["interactive"]
    assert pressed == {
        "type": "list_reply",
        "list_reply": {"id": "faq", "title": "Questions", "description": "Returns, delivery and more"},
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--location", "52.5"], "Invalid value for --location: expected LAT,LON in degrees"),
        (["--location", "91,0"], "'91,0' is out of range: latitude -90..90"),
        (["--at", "tomorrow", "hi"], "Invalid value for --at: expected an ISO 8601 time"),
        ([], "give a MESSAGE, --button ID or --location LAT,LON (or --interactive)"),
        (["hi", "--button", "x"], "give one of MESSAGE, --button or --location, not MESSAGE and --button"),
    ],
)
def test_usage_errors(simulate: Any, args: list[str], message: str) -> None:
    result = simulate(*args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.replace("│", " ").split())


def test_sqlite_is_migrated_postgresql_is_not(empty_database_url: str, backend: str) -> None:
    result = CliRunner().invoke(app, ["--database-url", empty_database_url, "simulate", "hi", "--at", MONDAY])
    if backend == "sqlite":
        assert result.exit_code == 0, result.stderr
        count = len(history())
        assert f"Migrated the SQLite database to revision {head_revision()} ({count} migrations)." in result.stderr
        assert result.stdout.startswith("Alex: hi\nNorthwind Support: Hi Alex!")
    else:
        assert result.exit_code == 1
        assert "Error: the database schema is behind: at empty" in result.stderr
        assert "Hint: run `chatops migrate`" in result.stderr


def test_configured_app_secret_is_used(simulate: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_APP_SECRET", "configured-secret")
    assert simulate("where is my order?", "--at", MONDAY).stdout == WELCOME


# --url: a real server (the Flask app in a thread, workers and a sender speaking to a fake Graph API) ------------


@pytest.fixture
def server(database_url: str, backend: str) -> Iterator[tuple[str, FakeGraphAPI]]:
    if backend != "sqlite":
        pytest.skip("one backend is enough for the HTTP path")
    with FakeGraphAPI() as fake:
        settings = load_settings(
            database_url=database_url,
            whatsapp_app_secret="server-secret",
            whatsapp_access_token="server-token",
            graph_api_url=fake.graph_api_url,
        )
        bot = load_bot(Path("stages.yaml"))
        engine = create_db_engine(database_url)
        http = make_server("127.0.0.1", 0, create_app(settings, bot, db=engine), threaded=True)
        thread = threading.Thread(target=http.serve_forever, daemon=True)
        background = Background(settings, bot, engine, workers=1, clock=utc_now)
        thread.start()
        background.start()
        try:
            yield f"http://127.0.0.1:{http.server_port}", fake
        finally:
            http.shutdown()
            background.stop()
            engine.dispose()


def test_url_posts_to_a_running_server(
    simulate: Any, server: tuple[str, FakeGraphAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, fake = server
    missing = simulate("hi", "--url", url)
    assert missing.exit_code == 2
    assert "Error: --url needs the whatsapp app secret" in missing.stderr

    monkeypatch.setenv("CHATOPS_WHATSAPP_APP_SECRET", "wrong")
    refused = simulate("hi", "--url", url)
    assert refused.exit_code == 1
    assert refused.stdout == f"POST {url} → HTTP 403\n"
    assert refused.stderr == (
        "Error: the server refused the webhook: X-Hub-Signature-256 does not match the body\n"
        "Hint: the server checks signatures with its own app secret: set CHATOPS_WHATSAPP_APP_SECRET here to the "
        "server's value\n"
    )
    monkeypatch.setenv("CHATOPS_MESSENGER_APP_SECRET", "server-secret")
    off = simulate("hi", "--url", url, "--channel", "messenger")
    assert off.exit_code == 1
    assert off.stderr.splitlines()[-1] == (
        f"Hint: the server has no messenger credentials (that webhook is off there), or {url} is not chatops"
    )

    monkeypatch.setenv("CHATOPS_WHATSAPP_APP_SECRET", "server-secret")
    result = simulate("where is my order?", "--url", url, "--timeout", "10")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith(f"POST {url} → HTTP 200\nAlex: where is my order?\nNorthwind Support: Hi Alex!")
    assert result.stdout.endswith("  (--button track | hours | human)\nstage: (new) → welcome → triage\n")
    deadline = time.monotonic() + 10
    while len(fake.requests) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    sent, read = fake.requests  # the server's own sender delivered the reply, then marked the message read
    assert sent.path == "/100000000000001/messages"
    assert sent.body["type"] == "interactive"
    assert read.body["status"] == "read"
    assert read.body["message_id"].startswith("wamid.simulated.")

    elsewhere = CliRunner().invoke(
        app, ["--database-url", "sqlite:///elsewhere.db", "simulate", "hi", "--url", f"{url}/webhooks/whatsapp"]
    )
    assert elsewhere.exit_code == 0
    assert elsewhere.stdout == (
        f"POST {url}/webhooks/whatsapp → HTTP 200\nAlex: hi\n"
        "no transcript: the configured database elsewhere.db does not exist\n"
    )


def test_help_has_an_example() -> None:
    result = CliRunner().invoke(app, ["simulate", "--help"])
    assert result.exit_code == 0
    assert 'Example: chatops simulate "where is my order?"' in result.stdout


def test_the_example_bot_spends_two_model_calls_on_a_free_question_and_none_on_a_button(
    simulate: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What docs/stages.md says under "Model calls per message", against the real OpenAI SDK and a loopback fake."""
    from tests.fakes.openai_server import FakeOpenAI

    with FakeOpenAI() as fake:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", fake.base_url)
        assert simulate("hi", "--at", MONDAY).exit_code == 0
        assert fake.requests == []
        question = simulate("do you sell gift cards?", "--at", MONDAY)
        assert "stage: triage → questions → triage" in question.stdout
        classify, answer = fake.requests
        assert classify.body["response_format"]["json_schema"]["name"] == "intent_choice"
        assert "response_format" not in answer.body
        assert "You answer general questions about Northwind." in answer.body["messages"][0]["content"]
        tracked = simulate("--button", "track", "--at", MONDAY)
        assert "stage: triage → tracking" in tracked.stdout
        assert len(fake.requests) == 2
