"""The webhook routes: verification, signatures, limits, parsing into the durable inbox, 503 when the DB is down."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.db.tables import conversations, inbound_messages
from chatops.web.app import create_app
from tests.conftest import MetaFixtures
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_envelope, whatsapp_text

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_app(database_url: str, db: sa.Engine | None = None, **overrides: object) -> Flask:
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        messenger_app_secret=APP_SECRET,
        messenger_verify_token=VERIFY_TOKEN,
        messenger_page_token=ACCESS_TOKEN,
        **overrides,
    )
    return create_app(settings, None, db=db, clock=lambda: NOW)


@pytest.fixture
def app(database_url: str, db: sa.Engine) -> Flask:
    return make_app(database_url, db)


@pytest.fixture
def webhook(app: Flask) -> Webhook:
    return Webhook(app.test_client())


def count(db: sa.Engine, table: sa.Table) -> int:
    with db.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize("channel", ["whatsapp", "messenger"])
def test_subscription_echoes_challenge(app: Flask, channel: str) -> None:
    client = app.test_client()
    query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"}
    response = client.get(f"/webhooks/{channel}", query_string=query)
    assert (response.status_code, response.text, response.mimetype) == (200, "1158201444", "text/plain")
    response = client.get(f"/webhooks/{channel}", query_string={**query, "hub.verify_token": "wrong"})
    assert response.status_code == 403
    assert response.json is not None
    assert response.json["error"]["code"] == "webhook_rejected"


def test_signature_checks(webhook: Webhook, db: sa.Engine) -> None:
    body = whatsapp_text("hello")
    assert webhook.client.post("/webhooks/whatsapp", data=body).status_code == 401
    assert webhook.post(body, signature="sha256=" + "0" * 64).status_code == 403
    assert count(db, inbound_messages) == 0
    assert webhook.post(body).status_code == 200
    assert count(db, inbound_messages) == 1


def test_bad_bodies(webhook: Webhook, database_url: str, db: sa.Engine) -> None:
    assert webhook.post(b"{not json").status_code == 400
    response = webhook.post(json.dumps({"object": "page", "entry": []}).encode())
    assert response.status_code == 400
    assert response.json is not None
    assert "expected 'whatsapp_business_account'" in response.json["error"]["message"]
    small = Webhook(make_app(database_url, db, max_body_bytes=1000).test_client())
    assert small.post(whatsapp_text("x" * 2000)).status_code == 413


def test_disabled_channel_is_404_with_the_variables_to_set(database_url: str, db: sa.Engine) -> None:
    app = create_app(load_settings(database_url=database_url), None, db=db)
    response = app.test_client().post("/webhooks/whatsapp", data=b"{}")
    assert response.status_code == 404
    assert response.json is not None
    assert "whatsapp channel is not configured" in response.json["error"]["message"]


def test_every_fixture_is_accepted_and_stored(webhook: Webhook, meta_fixture: MetaFixtures, db: sa.Engine) -> None:
    for name in meta_fixture.names("wa_") + meta_fixture.names("ms_"):
        if "send_api" in name:
            continue
        channel = "whatsapp" if name.startswith("wa_") else "messenger"
        response = webhook.post(meta_fixture.bytes(name), channel=channel)
        assert response.status_code == 200, (name, response.json)
    with db.connect() as connection:
        kinds = set(connection.execute(sa.select(inbound_messages.c.kind)).scalars())
    # Nine pywa fixtures share one wamid: they are stored once (dedup), the rest each once.
    assert {"text", "button", "location", "unsupported"} <= kinds


def test_batch_of_1000_messages_is_stored_whole(webhook: Webhook, db: sa.Engine) -> None:
    messages = [
        {
            "from": f"1555{i % 50:07d}",
            "id": f"wamid.batch{i}",
            "timestamp": "1790000000",
            "type": "text",
            "text": {"body": f"message {i}"},
        }
        for i in range(1000)
    ]
    body = whatsapp_envelope(messages, wa_id="15550000000", name="Batch")
    response = webhook.post(body)
    assert response.status_code == 200
    assert response.json == {"stored": 1000, "duplicates": 0, "statuses": 0}
    assert count(db, inbound_messages) == 1000
    assert count(db, conversations) == 50


def test_same_message_50_times_concurrently_is_stored_once(app: Flask, db: sa.Engine) -> None:
    body = whatsapp_text("only once", message_id="wamid.duplicate")

    def deliver(_: int) -> int:
        return Webhook(app.test_client()).post(body).status_code

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(deliver, range(50)))
    assert statuses == [200] * 50
    assert count(db, inbound_messages) == 1
    assert count(db, conversations) == 1


def test_phone_number_allow_list(database_url: str, db: sa.Engine) -> None:
    app = make_app(database_url, db, whatsapp_phone_number_ids=["999"])
    assert Webhook(app.test_client()).send_text("hi").status_code == 200
    assert count(db, inbound_messages) == 0


def test_database_down_answers_503_and_nothing_is_acknowledged(tmp_path: Path) -> None:
    broken = create_db_engine("postgresql://nobody@127.0.0.1:1/none")
    app = make_app("sqlite:///unused.db", broken)
    response = Webhook(app.test_client()).send_text("hello")
    assert response.status_code == 503
    assert response.json == {
        "error": {"code": "database_unavailable", "message": "the database is unavailable; retry later", "hint": None}
    }


def test_the_webhook_front_answers_exactly_as_the_flask_route(app: Flask, db: sa.Engine) -> None:
    """The successful POST skips Flask (chatops.web.webhooks.WebhookFront); its answer must not differ."""
    from werkzeug.test import Client

    from chatops.channels import sign
    from chatops.web.metrics import WebhookTimer
    from chatops.web.request_ids import RequestIds
    from chatops.web.webhooks import WebhookFront

    outer = app.wsgi_app
    assert isinstance(outer, RequestIds)  # outside everything, so the front's answers carry a request id too
    timer = outer.app
    assert isinstance(timer, WebhookTimer)  # counts and times the answers of both paths alike
    front = timer.app
    assert isinstance(front, WebhookFront)
    answers = []
    for wsgi in (front, front.flask):  # through the front, then straight into Flask
        body = whatsapp_text("hello", message_id=f"wamid.{len(answers)}")
        response = Client(wsgi).post(
            "/webhooks/whatsapp",
            data=body,
            headers={"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"},
        )
        answers.append((response.status_code, sorted(response.headers.items()), response.data))
    assert answers[0] == answers[1]
    assert answers[0][0] == 200
    assert answers[0][2] == b'{"stored":1,"duplicates":0,"statuses":0}'
    assert count(db, inbound_messages) == 2


def test_failed_webhooks_are_answered_by_the_flask_error_handlers(
    app: Flask, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    """What the front cannot answer (a failure, no Content-Length, an incomplete body) Flask answers as before."""
    client = app.test_client()
    body = whatsapp_text("hello")
    bad = client.post("/webhooks/whatsapp", data=body, headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert (bad.status_code, bad.json["error"]["code"]) == (403, "webhook_rejected")  # type: ignore[index]
    assert Webhook(client).post(b"[1]").status_code == 400
    incomplete = client.post(
        "/webhooks/whatsapp",
        environ_overrides={"CONTENT_LENGTH": str(len(body) + 10)},
        data=body,
        headers={"X-Hub-Signature-256": "sha256=" + "0" * 64},
    )
    assert incomplete.status_code == 400  # werkzeug: the client went away mid-body
    assert client.get("/webhooks/whatsapp", query_string={"hub.mode": "x"}).status_code == 403

    broken = make_app("sqlite:///unused.db", create_db_engine("postgresql://nobody@127.0.0.1:1/none"))
    with caplog.at_level("ERROR", logger="chatops.web.errors"):
        down = Webhook(broken.test_client()).send_text("hello")
    assert (down.status_code, down.json["error"]["code"]) == (503, "database_unavailable")  # type: ignore[index]
    assert "database unavailable" in caplog.text
