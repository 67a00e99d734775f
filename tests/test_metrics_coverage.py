"""Every figure /metrics promises moves when the thing it counts happens: through the real webhook route, the
worker and sender that ``chatops serve`` wires to the app's metrics, the admin API's limiter, and the pool."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from chatops.cli.serve import _background
from chatops.config.bot import load_bot
from chatops.config.settings import load_settings
from chatops.engine.flood import shared_storage
from chatops.web.app import create_app
from tests.bots import write_bot
from tests.fakes.graph_api import FakeGraphAPI, Reply
from tests.fakes.openai_server import FakeOpenAI
from tests.metrics import sample
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])


def scrape(app: Flask) -> str:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    return response.text


@pytest.fixture
def fakes() -> Iterator[tuple[FakeGraphAPI, FakeOpenAI]]:
    with FakeGraphAPI() as graph, FakeOpenAI() as ai:
        yield graph, ai


@SQLITE_ONLY
def test_webhooks_turns_ai_sends_and_flood_limits_are_counted(
    database_url: str, db: sa.Engine, tmp_path: Path, fakes: tuple[FakeGraphAPI, FakeOpenAI]
) -> None:
    graph, ai = fakes
    path = write_bot(tmp_path)
    path.write_text(
        path.read_text().replace(
            "  max_replies: 2\n", "  max_replies: 2\n  rate_limit:\n    messages: 2/minute\n    reply: Slow down.\n"
        )
    )
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        graph_api_url=graph.graph_api_url,
        ai="openai",
        openai_api_key="sk-test",
        openai_base_url=ai.base_url,
        debounce_seconds=0,
    )
    shared_storage(settings.rate_limit_storage).reset()  # memory:// is per process: earlier tests' counts go
    bot = load_bot(path)
    app = create_app(settings, bot, db=db)
    background = _background(settings, bot, db, workers=1, app=app)  # serve's wiring, threads not started
    webhook = Webhook(app.test_client())
    try:
        before = scrape(app)
        assert sample(before, "chatops_rate_limited_total", limit="conversation") == 0.0
        for number, text in enumerate(("hello", "where is my parcel", "and now?"), start=1):
            body = whatsapp_text(text, message_id=f"wamid.M{number}", timestamp=int(time.time()))
            assert webhook.post(body).status_code == 200
            assert background.workers[0].work_once()
        assert webhook.post(b'{"object":"whatsapp_business_account"}', signature="sha256=00").status_code == 401
        graph.script(Reply(), Reply(), Reply.error(131047))  # send, mark read, send
        assert background.sender.send_due() == 1  # one per conversation per batch: the welcome first
        assert background.sender.send_due() == 1  # then the menu's AI reply, refused by Meta
        text = scrape(app)
    finally:
        background.stop(timeout=1)

    assert sample(text, "chatops_webhook_requests_total", channel="whatsapp", status="200") == 3
    assert sample(text, "chatops_webhook_requests_total", channel="whatsapp", status="401") == 1
    assert sample(text, "chatops_webhook_ack_seconds_count", channel="whatsapp") == 4
    assert sample(text, "chatops_webhook_events_total", channel="whatsapp", outcome="inserted") == 3
    assert sample(text, "chatops_turns_total", outcome="ok") == 2
    assert sample(text, "chatops_turn_seconds_count") == 2
    assert sample(text, "chatops_rate_limited_total", limit="conversation") == 1  # the third message
    assert sample(text, "chatops_ai_request_seconds_count", call="reply") >= 1
    assert sample(text, "chatops_ai_tokens_total", call="reply", kind="prompt") > 0
    assert sample(text, "chatops_ai_tokens_total", call="reply", kind="completion") > 0
    assert sample(text, "chatops_outbound_messages_total", channel="whatsapp", outcome="sent", error_code="") == 1
    assert (
        sample(text, "chatops_outbound_messages_total", channel="whatsapp", outcome="failed", error_code="131047") == 1
    )


@SQLITE_ONLY
def test_ai_errors_are_counted_by_call_and_type(
    database_url: str, db: sa.Engine, tmp_path: Path, fakes: tuple[FakeGraphAPI, FakeOpenAI]
) -> None:
    from tests.fakes.openai_server import HTTPError

    graph, ai = fakes
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        graph_api_url=graph.graph_api_url,
        ai="openai",
        openai_api_key="sk-test",
        openai_base_url=ai.base_url,
        debounce_seconds=0,
    )
    bot = load_bot(write_bot(tmp_path))
    app = create_app(settings, bot, db=db)
    background = _background(settings, bot, db, workers=1, app=app)
    webhook = Webhook(app.test_client())
    try:
        for number, text in enumerate(("hello", "where is my parcel"), start=1):
            if number == 2:
                ai.script(*[HTTPError(400, "bad request", "invalid_request_error")] * 4)
            body = whatsapp_text(text, message_id=f"wamid.E{number}", timestamp=int(time.time()))
            assert webhook.post(body).status_code == 200
            assert background.workers[0].work_once()
        text = scrape(app)
    finally:
        background.stop(timeout=1)
    errors = sum(
        float(value)
        for value in re.findall(r'^chatops_ai_errors_total\{call="\w+",error="AIError"\} (\S+)$', text, re.MULTILINE)
    )
    assert errors >= 1, text
    assert sample(text, "chatops_turns_total", outcome="error") == 1


@SQLITE_ONLY
def test_admin_api_rate_limit_refusals_are_counted(database_url: str) -> None:
    app = create_app(load_settings(database_url=database_url, api_bad_key_limit="2/minute"), None)
    client = app.test_client()
    wrong = {"Authorization": "Bearer chatops_00000000_" + "x" * 43}
    answers = [client.get("/api/v1/conversations", headers=wrong).status_code for _ in range(4)]
    assert answers == [401, 401, 429, 429]
    assert sample(scrape(app), "chatops_rate_limited_total", limit="bad_key") == 2


@SQLITE_ONLY
def test_pool_gauges_show_connections_in_use(database_url: str) -> None:
    app = create_app(load_settings(database_url=database_url), None)
    db: sa.Engine = app.extensions["chatops"].db
    idle = scrape(app)
    assert sample(idle, "chatops_db_pool_size") == 8
    assert sample(idle, "chatops_db_pool_max") == 16
    with db.connect(), db.connect():
        busy = scrape(app)
    assert sample(busy, "chatops_db_pool_checked_out") == sample(idle, "chatops_db_pool_checked_out") + 2
