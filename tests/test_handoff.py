"""The human side of a handoff: operator replies through the outbox, the 24-hour window, pause, hand-back, timeout."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app as cli
from chatops.db.tables import conversations, inbound_messages, outbound_messages
from tests.admin import AdminHarness, deliver, handed_off, sent_texts
from tests.bots import STAGES
from tests.fakes.graph_api import FakeGraphAPI

runner = CliRunner()


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


@pytest.fixture
def admin(tmp_path: Path, database_url: str, db: sa.Engine, graph: FakeGraphAPI) -> Iterator[AdminHarness]:
    harness = AdminHarness(tmp_path, database_url, db, graph_api_url=graph.graph_api_url)
    yield harness
    harness.runtime.variables.runner.close()


def test_round_trip_bot_person_operator_and_back(admin: AdminHarness, graph: FakeGraphAPI) -> None:
    conversation = handed_off(admin)
    deliver(admin)
    assert sent_texts(graph)[-1] == "A person will answer you soon."

    admin.send("my parcel is lost")  # while a person has it: stored, not answered
    assert admin.drain() == 0
    answer = admin.call(
        "POST", f"/conversations/{conversation}/messages", role="operator", json={"text": "Hi Ada, I am on it."}
    )
    assert answer.status_code == 201, answer.json
    assert answer.json["sent_by"] == "operator-key"
    deliver(admin)
    assert sent_texts(graph)[-1] == "Hi Ada, I am on it."
    detail = admin.call("GET", f"/conversations/{conversation}").json
    operator = [m for m in detail["messages"] if m["sent_by"]]
    assert [(m["text"], m["sent_by"], m["status"]) for m in operator] == [
        ("Hi Ada, I am on it.", "operator-key", "sent")
    ]
    assert detail["waiting"] is False

    back = admin.call("POST", f"/conversations/{conversation}/handback", role="operator", json={"stage": "menu"})
    assert back.status_code == 200, back.json
    assert back.json == {"conversation_id": conversation, "stage": "menu", "skipped": 1}
    assert admin.drain() == 0  # the message that arrived meanwhile is not answered now
    assert admin.rows(inbound_messages, "text", "status")[-1] == ("my parcel is lost", "skipped")

    admin.send("TS-123 where is it?")
    assert admin.drain() == 1  # the bot answers the next message, from the chosen stage
    with admin.db.connect() as connection:
        mode, stage = connection.execute(
            sa.select(conversations.c.mode, conversations.c.stage).where(conversations.c.id == conversation)
        ).one()
    assert (mode, stage) == ("bot", "menu")
    deliver(admin)
    assert sent_texts(graph)[-1].startswith("Sorry")  # tracking's provider is unreachable: its on_error answers


def test_outside_the_24_hour_window_free_text_is_409_and_the_template_goes(
    admin: AdminHarness, graph: FakeGraphAPI
) -> None:
    conversation = handed_off(admin)
    admin.clock.advance(24 * 3600 + 1)
    refused = admin.call("POST", f"/conversations/{conversation}/messages", role="operator", json={"text": "Hello?"})
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "window_closed"
    assert "template" in refused.json["error"]["hint"]
    assert len(admin.rows(outbound_messages, "id")) == 2  # nothing queued
    no_template = admin.call(
        "POST", f"/conversations/{conversation}/messages", role="operator", json={"template": True}
    )
    assert no_template.status_code == 400  # the test bot declares no whatsapp_template
    assert "no whatsapp_template" in no_template.json["error"]["message"]


def test_the_configured_template_is_sent_outside_the_window(
    tmp_path: Path, database_url: str, db: sa.Engine, graph: FakeGraphAPI
) -> None:
    (tmp_path / "bot").mkdir()
    admin = AdminHarness(tmp_path / "bot", database_url, db, graph_api_url=graph.graph_api_url)
    try:
        stages = admin.bot.path.read_text() + "whatsapp_template:\n  name: follow_up\n  params: ['{{ user.name }}']\n"
        admin.bot.path.write_text(stages)
        from chatops.config.bot import load_bot

        admin.app.extensions["chatops"].bot = load_bot(admin.bot.path)
        conversation = handed_off(admin)
        admin.clock.advance(25 * 3600)
        sent = admin.call("POST", f"/conversations/{conversation}/messages", role="operator", json={"template": True})
        assert sent.status_code == 201, sent.json
        deliver(admin)
        assert sent_texts(graph)[-1] == "template:follow_up"
        assert graph.requests[-1].body["template"]["components"][0]["parameters"] == [{"type": "text", "text": "Ada"}]
    finally:
        admin.runtime.variables.runner.close()


def test_pause_stops_the_bot_and_a_viewer_cannot(admin: AdminHarness) -> None:
    admin.send("hello")
    admin.drain()
    conversation = admin.conversation_id()
    assert admin.call("POST", f"/conversations/{conversation}/pause", role="viewer").status_code == 403
    paused = admin.call("POST", f"/conversations/{conversation}/pause", role="operator")
    assert paused.json["mode"] == "paused"
    admin.send("anyone?")
    assert admin.drain() == 0
    assert admin.call("GET", "/conversations", query_string={"waiting": "true"}).json["items"][0]["id"] == conversation


def test_hand_back_to_an_unknown_stage_is_refused(admin: AdminHarness) -> None:
    conversation = handed_off(admin)
    refused = admin.call("POST", f"/conversations/{conversation}/handback", role="operator", json={"stage": "nowhere"})
    assert refused.status_code == 400
    assert refused.json["error"]["message"] == "unknown stage 'nowhere'"
    again = admin.call("POST", f"/conversations/{conversation}/handback", role="operator", json={"stage": "handoff"})
    assert again.status_code == 400
    entries = admin.call("GET", "/audit").json["items"]
    assert [(e["action"], e["outcome"]) for e in entries[:2]] == [
        ("api.handoff.handback_view", "rejected"),
        ("api.handoff.handback_view", "rejected"),
    ]


def test_a_handoff_times_out_back_to_the_bot_which_answers_the_newest_message(
    tmp_path: Path, database_url: str, db: sa.Engine
) -> None:
    (tmp_path / "bot").mkdir()
    admin = AdminHarness(tmp_path / "bot", database_url, db)
    try:
        source = admin.bot.path.read_text().replace(
            "    handoff: true\n", "    handoff: true\n    handoff_timeout: 30m\n    handoff_return: menu\n"
        )
        assert source != STAGES
        admin.bot.path.write_text(source)
        from chatops.config.bot import load_bot
        from chatops.engine.runtime import build_runtime

        admin.runtime.variables.runner.close()
        admin.bot = load_bot(admin.bot.path)
        admin.runtime = build_runtime(admin.settings, admin.bot)
        conversation = handed_off(admin)
        admin.send("hello?")
        admin.send("is anybody there?")
        admin.clock.advance(29 * 60)
        worker = admin.worker()
        stop = threading.Event()
        thread = threading.Thread(target=worker.run, args=(stop,), kwargs={"idle_wait": 0.01})
        thread.start()
        try:
            time.sleep(0.3)
            assert admin.rows(inbound_messages, "status")[-2:] == [("pending",), ("pending",)]
            admin.clock.advance(61)
            deadline = time.monotonic() + 10
            while admin.rows(inbound_messages, "status")[-1] != ("done",) and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        assert admin.rows(inbound_messages, "text", "status")[-2:] == [
            ("hello?", "skipped"),
            ("is anybody there?", "done"),
        ]
        with db.connect() as connection:
            mode = connection.execute(sa.select(conversations.c.mode).where(conversations.c.id == conversation))
            assert mode.scalar_one() == "bot"
    finally:
        admin.runtime.variables.runner.close()


def test_cli_reply_pause_and_handback(admin: AdminHarness, graph: FakeGraphAPI) -> None:
    admin.clock.now = datetime.now(UTC)  # the CLI reads the real clock
    conversation = handed_off(admin)
    url = admin.settings.database_url
    stages = str(admin.bot.path)
    replied = runner.invoke(
        cli,
        ["conversations", "reply", str(conversation), "Hello from the desk", "--database-url", url, "--stages", stages],
    )
    assert replied.exit_code == 0, replied.output
    assert replied.stdout.startswith("Queued message ")
    admin.clock.now = datetime.now(UTC)  # the CLI queued it at its own now
    deliver(admin)
    assert sent_texts(graph)[-1] == "Hello from the desk"
    assert admin.rows(outbound_messages, "sent_by")[-1][0].startswith("cli:")
    admin.send("thanks")
    back = runner.invoke(
        cli,
        ["conversations", "handback", str(conversation), "--stage", "menu", "--database-url", url, "--stages", stages],
    )
    assert back.exit_code == 0, back.output
    assert back.stdout == (
        f"Conversation {conversation} is back with the bot at stage 'menu'; "
        "1 message(s) that arrived meanwhile will not be answered.\n"
    )
    with admin.db.begin() as connection:
        connection.execute(sa.update(conversations).values(last_inbound_at=datetime.now(UTC) - timedelta(hours=25)))
    closed = runner.invoke(
        cli, ["conversations", "reply", str(conversation), "late", "--database-url", url, "--stages", stages]
    )
    assert closed.exit_code == 1
    assert closed.stderr.startswith("Error: the 24-hour customer-service window closed at")
