"""Outside the 24-hour window the approved WhatsApp template goes out with its parameters rendered: a webhook, the
real worker and engine, then the real sender a day later against the loopback fake Graph API."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from chatops.channels.graph import GraphClient
from chatops.config.bot import load_bot
from chatops.config.settings import Settings, load_settings
from chatops.db.tables import outbound_messages
from chatops.engine.reload import reload_bot
from chatops.engine.runtime import Background, build_runtime, whatsapp_template
from chatops.engine.sender import OutboxSender
from chatops.engine.worker import Worker
from chatops.web.app import create_app
from tests.bots import write_bot
from tests.fakes.graph_api import FakeGraphAPI
from tests.harness import Clock
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text


def bot_settings(stages: Path, database_url: str, fake: FakeGraphAPI) -> Settings:
    return load_settings(
        database_url=database_url,
        stages=stages,
        templates_dir=stages.parent / "templates",
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        graph_api_url=fake.graph_api_url,
        ai="offline",
    )


@pytest.fixture
def fake() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


def answer_then_send_a_day_later(
    folder: Path, database_url: str, db: sa.Engine, fake: FakeGraphAPI, params: list[str], **message: Any
) -> list[Any]:
    """Write the test bot with ``whatsapp_template.params``, answer one message, send the replies 25 h later."""
    stages = write_bot(folder)
    quoted = ", ".join('"' + param.replace('"', '\\"') + '"' for param in params)
    stages.write_text(stages.read_text() + f"whatsapp_template:\n  name: follow_up\n  params: [{quoted}]\n")
    settings = bot_settings(stages, database_url, fake)
    bot = load_bot(stages)
    clock = Clock()
    webhook = Webhook(create_app(settings, bot, db=db, clock=clock).test_client())
    body = whatsapp_text("hi", timestamp=int(clock().timestamp()), **message)
    assert webhook.post(body).status_code == 200
    worker = Worker(build_runtime(settings, bot), db, settings, clock=clock, name="w0")
    assert worker.work_once()
    clock.advance(timedelta(hours=25).total_seconds())
    with httpx.Client() as http:
        sender = OutboxSender(
            settings, db, GraphClient.from_settings(settings, http), template=whatsapp_template(bot), clock=clock
        )
        try:
            sender.send_due()
        finally:
            sender.close()
    with db.connect() as connection:
        return list(connection.execute(sa.select(outbound_messages.c.status, outbound_messages.c.error)))


def test_the_window_template_parameters_are_rendered_with_the_replys_context(
    tmp_path: Path, database_url: str, db: sa.Engine, fake: FakeGraphAPI
) -> None:
    params = ["{{ user.name | default('there') }}", "{{ company }}", "{{ message.text | upper }}"]

    rows = answer_then_send_a_day_later(tmp_path, database_url, db, fake, params, name="Ada")

    sent = [request for request in fake.requests if "type" in request.body]  # not the mark-as-read
    assert [request.body["type"] for request in sent] == ["template"]
    assert sent[0].body["template"] == {
        "name": "follow_up",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "Ada"},
                    {"type": "text", "text": "Test Shop"},
                    {"type": "text", "text": "HI"},
                ],
            }
        ],
    }
    assert [row.status for row in rows] == ["sent"]


def test_parameters_that_do_not_render_are_never_sent_as_jinja(
    tmp_path: Path, database_url: str, db: sa.Engine, fake: FakeGraphAPI
) -> None:
    rows = answer_then_send_a_day_later(tmp_path, database_url, db, fake, ["{{ user.nickname }}"])

    assert [request for request in fake.requests if "type" in request.body] == []
    assert [(row.status, row.error) for row in rows] == [
        (
            "failed",
            "outside the 24-hour customer-service window; the whatsapp_template parameters could not be rendered "
            "for this reply (see the worker's log)",
        )
    ]


def test_a_bot_reload_changes_the_template_the_running_sender_sends(
    tmp_path: Path, database_url: str, db: sa.Engine, fake: FakeGraphAPI
) -> None:
    """The sender of a running process asks the current definition: after `POST /bot/reload` (or `chatops`'s
    reload in any process) a reply outside the window goes out as the new template, without a restart."""
    stages = write_bot(tmp_path)
    original = stages.read_text()
    stages.write_text(original + "whatsapp_template:\n  name: follow_up\n")
    settings = bot_settings(stages, database_url, fake)
    bot = load_bot(stages)
    clock = Clock()
    webhook = Webhook(create_app(settings, bot, db=db, clock=clock).test_client())
    background = Background(settings, bot, db, workers=1, clock=clock)
    background.holder.watch.interval = 0.0  # look for a reload at every turn and send, not every 2 s
    try:
        assert webhook.post(whatsapp_text("hi", timestamp=int(clock().timestamp()))).status_code == 200
        assert background.workers[0].work_once()
        stages.write_text(original + "whatsapp_template:\n  name: follow_up_v2\n")
        reload_bot(db, settings, actor="test", now=clock())
        clock.advance(timedelta(hours=25).total_seconds())
        background.sender.send_due()
    finally:
        background.stop(timeout=5)

    sent = [request.body["template"]["name"] for request in fake.requests if request.body.get("type") == "template"]
    assert sent == ["follow_up_v2"]
