"""Hostile webhooks through the real route and the real database: text that cannot be stored as it is, numbers
out of range, values the database refuses. The answer is 200 with everything storable stored, or 400 with a
reason and nothing stored; never 500, never 503 for bad data (docs/events.md, "What enters from a webhook").
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from chatops.config.settings import load_settings
from chatops.db.tables import conversations, inbound_messages, outbound_messages
from chatops.web.app import create_app
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_envelope

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
BAD = "\ufffd"  # what a NUL or a lone surrogate becomes


@pytest.fixture
def app(database_url: str, db: sa.Engine) -> Flask:
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        messenger_app_secret=APP_SECRET,
        messenger_verify_token=VERIFY_TOKEN,
        messenger_page_token=ACCESS_TOKEN,
    )
    return create_app(settings, None, db=db, clock=lambda: NOW)


@pytest.fixture
def webhook(app: Flask) -> Webhook:
    return Webhook(app.test_client())


def rows(db: sa.Engine) -> list[Any]:
    m, c = inbound_messages.c, conversations.c
    query = sa.select(
        m.provider_message_id, m.text, m.payload, m.raw, m.provider_timestamp, c.user_id, c.user_name, c.account_id
    ).join(conversations, c.id == m.conversation_id)
    with db.connect() as connection:
        return list(connection.execute(query.order_by(m.id)).all())


def wa_message(message_id: str, *, wa_id: str = "15550001111", text: str = "hi", **fields: Any) -> dict[str, Any]:
    return {
        "from": wa_id,
        "id": message_id,
        "timestamp": "1790000000",
        "type": "text",
        "text": {"body": text},
        **fields,
    }


def escaped(payload: Any) -> bytes:
    """JSON with every non-ASCII character as a \\u escape: how a lone surrogate or NUL travels in a body."""
    return json.dumps(payload, ensure_ascii=True).encode()


def wa_body(messages: list[dict[str, Any]], *, name: str = "Ada", phone_number_id: str = "106540352242922") -> bytes:
    return escaped(
        json.loads(whatsapp_envelope(messages, wa_id="15550001111", name=name, phone_number_id=phone_number_id))
    )


# Text that the database cannot hold as it is ------------------------------------------------------------------


@pytest.mark.parametrize("hostile", ["\ud800", chr(0xDFFF), "\x00"], ids=["high-surrogate", "low-surrogate", "nul"])
def test_unstorable_characters_in_every_text_field_are_replaced_and_stored(
    webhook: Webhook, db: sa.Engine, hostile: str
) -> None:
    wa_id = f"1555{hostile}0001111"
    messages = [
        wa_message(f"wamid.TEXT{hostile}", wa_id=wa_id, text=f"a{hostile}b"),
        {
            "from": wa_id,
            "id": "wamid.BUTTON",
            "timestamp": "1790000000",
            "type": "button",
            "button": {"payload": f"pay{hostile}load", "text": f"Yes{hostile}"},
            f"key{hostile}": "a key too",
        },
    ]
    body = escaped(
        json.loads(whatsapp_envelope(messages, wa_id=wa_id, name=f"A{hostile}da", phone_number_id=f"1065{hostile}"))
    )
    response = webhook.post(body)
    assert response.status_code == 200, response.json
    assert response.json == {"stored": 2, "duplicates": 0, "statuses": 0}
    text, button = rows(db)
    assert text.provider_message_id == f"wamid.TEXT{BAD}"
    assert text.text == f"a{BAD}b"
    assert text.raw["text"]["body"] == f"a{BAD}b"
    assert (text.user_id, text.user_name, text.account_id) == (f"1555{BAD}0001111", f"A{BAD}da", f"1065{BAD}")
    assert button.payload["button"] == f"pay{BAD}load"
    assert button.text == f"Yes{BAD}"
    assert button.raw[f"key{BAD}"] == "a key too"


def test_a_messenger_postback_with_unstorable_characters_is_stored(webhook: Webhook, db: sa.Engine) -> None:
    event = {
        "sender": {"id": "17391\ud80041089"},
        "recipient": {"id": "2345548\x0038031189"},
        "timestamp": 1520151355121,
        "postback": {"payload": "get\udc00started", "title": "Aan de\x00 slag"},
    }
    body = escaped({"object": "page", "entry": [{"id": "234554838031189", "time": 1, "messaging": [event]}]})
    response = webhook.post(body, channel="messenger")
    assert response.status_code == 200, response.json
    (row,) = rows(db)
    assert (row.user_id, row.account_id, row.text) == (f"17391{BAD}41089", f"2345548{BAD}38031189", f"Aan de{BAD} slag")
    assert row.payload["button"] == f"get{BAD}started"


def test_a_poisoned_message_does_not_cost_the_rest_of_its_batch(webhook: Webhook, db: sa.Engine) -> None:
    messages = [wa_message(f"wamid.GOOD{i}", text=f"good {i}") for i in range(3)]
    messages.insert(1, wa_message("wamid.POISON", text="\ud800\x00"))
    response = webhook.post(wa_body(messages))
    assert response.status_code == 200, response.json
    assert [(r.provider_message_id, r.text) for r in rows(db)] == [
        ("wamid.GOOD0", "good 0"),
        ("wamid.POISON", BAD * 2),
        ("wamid.GOOD1", "good 1"),
        ("wamid.GOOD2", "good 2"),
    ]


def test_concurrent_good_requests_beside_poisoned_ones_are_all_stored(app: Flask, db: sa.Engine) -> None:
    # On SQLite these share group commits: a poisoned delivery used to fail every other one of its batch (500).
    bodies = [wa_body([wa_message(f"wamid.C{i}", text="\ud800" if i % 4 == 0 else f"good {i}")]) for i in range(60)]
    with ThreadPoolExecutor(12) as pool:
        statuses = list(pool.map(lambda body: Webhook(app.test_client()).post(body).status_code, bodies))
    assert statuses == [200] * 60
    assert len(rows(db)) == 60


# Numbers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp", [10**400, -(10**400), "1e400", 1e300, "NaN", 10**12, "²"], ids=lambda t: str(t)[:12]
)
def test_an_out_of_range_timestamp_skips_its_message_and_keeps_the_batch(
    webhook: Webhook, db: sa.Engine, timestamp: Any, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [wa_message("wamid.BEFORE"), wa_message("wamid.ODD", timestamp=timestamp), wa_message("wamid.AFTER")]
    with caplog.at_level(logging.WARNING, logger="chatops.web.webhooks"):
        response = webhook.post(wa_body(messages))
    assert response.status_code == 200, response.json
    assert response.json == {"stored": 2, "duplicates": 0, "statuses": 0}
    assert [r.provider_message_id for r in rows(db)] == ["wamid.BEFORE", "wamid.AFTER"]
    assert "malformed WhatsApp message skipped" in caplog.text
    assert "timestamp" in caplog.text


def test_a_messenger_timestamp_out_of_range_skips_its_event(webhook: Webhook, db: sa.Engine) -> None:
    def event(mid: str, timestamp: Any) -> dict[str, Any]:
        return {
            "sender": {"id": "1"},
            "recipient": {"id": "2"},
            "timestamp": timestamp,
            "message": {"mid": mid, "text": "x"},
        }

    entry = {"id": "2", "time": 10**400, "messaging": [event("m.ok", 1520151355121), event("m.odd", 10**400)]}
    response = webhook.post(escaped({"object": "page", "entry": [entry]}), channel="messenger")
    assert response.status_code == 200, response.json
    assert [r.provider_message_id for r in rows(db)] == ["m.ok"]


def test_a_number_past_pythons_digit_limit_is_a_400_naming_its_field(webhook: Webhook, db: sa.Engine) -> None:
    body = wa_body([wa_message("wamid.X")]).replace(b'"wamid.X"', b"9" * 5000)
    response = webhook.post(body)
    assert response.status_code == 400
    assert response.json is not None
    message = response.json["error"]["message"]
    assert message.startswith("invalid JSON: the number in 'id' has 5000 digits"), message
    assert rows(db) == []


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(webhook: Webhook, db: sa.Engine, constant: bytes) -> None:
    body = wa_body([wa_message("wamid.X")]).replace(b'"1790000000"', constant)
    response = webhook.post(body)
    assert response.status_code == 400
    assert response.json is not None
    assert response.json["error"]["message"] == f"invalid JSON: {constant.decode()} is not a JSON number"
    assert rows(db) == []


def test_numbers_where_text_belongs_and_odd_coordinates_are_stored(webhook: Webhook, db: sa.Engine) -> None:
    location = {"latitude": "nan", "longitude": 10**400, "name": 12.5, "address": -(10**300)}
    messages = [
        wa_message("wamid.NUM", wa_id=15550001111, id=10**40, text=None),  # ids as (big) numbers
        {"from": "15550001111", "id": "wamid.LOC", "timestamp": 1790000000.5, "type": "location", "location": location},
    ]
    response = webhook.post(wa_body(messages))
    assert response.status_code == 200, response.json
    number, place = rows(db)
    assert number.provider_message_id == str(10**40)
    assert place.payload["latitude"] is None
    assert place.payload["longitude"] is None
    assert place.payload["name"] == "12.5"


def test_an_error_code_out_of_range_reads_as_absent(webhook: Webhook, db: sa.Engine) -> None:
    with db.begin() as connection:  # a sent reply for the failed status to update
        conversation_id = connection.execute(
            conversations.insert().values(
                channel="whatsapp",
                account_id="106540352242922",
                user_id="15550001111",
                state={},
                created_at=NOW,
                updated_at=NOW,
            )
        ).inserted_primary_key[0]
        connection.execute(
            outbound_messages.insert().values(
                conversation_id=conversation_id,
                body={"kind": "text", "text": "hi"},
                status="sent",
                provider_message_id="wamid.SENT",
                next_attempt_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    status = {
        "id": "wamid.SENT",
        "recipient_id": "15550001111",
        "status": "failed",
        "timestamp": "1790000000",
        "errors": [{"code": 10**30, "title": "Odd\x00"}],
    }
    value = {"metadata": {"phone_number_id": "106540352242922"}, "statuses": [status]}
    payload = {"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages", "value": value}]}]}
    response = webhook.post(escaped(payload))
    assert response.status_code == 200, response.json
    assert response.json == {"stored": 0, "duplicates": 0, "statuses": 1}
    with db.connect() as connection:
        row = connection.execute(
            sa.select(outbound_messages.c.status, outbound_messages.c.error_code, outbound_messages.c.error)
        ).one()
    assert (row.status, row.error_code, row.error) == ("failed", None, f"Odd{BAD}")


# Values longer than the database holds -----------------------------------------------------------------------


def test_ids_longer_than_the_database_holds_skip_their_message(
    webhook: Webhook, db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [
        wa_message("wamid.OK"),
        wa_message("wamid." + "L" * 300),  # provider message ids hold 256 characters
        wa_message("wamid.USER", wa_id="1" * 65),  # user ids hold 64
    ]
    with caplog.at_level(logging.WARNING, logger="chatops.web.webhooks"):
        response = webhook.post(wa_body(messages, name="N" * 1000))
    assert response.status_code == 200, response.json
    (row,) = rows(db)
    assert row.provider_message_id == "wamid.OK"
    assert len(row.user_name) == 256
    assert row.user_name.endswith("…")
    assert caplog.text.count("malformed WhatsApp message skipped") == 2


# Values the database refuses ----------------------------------------------------------------------------------


def refuse_text(db: sa.Engine, text: str) -> None:
    """Make the database refuse inbound messages with ``text`` (a constraint the schema does not have)."""
    with db.begin() as connection:
        if db.dialect.name == "sqlite":
            connection.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON inbound_messages "
                f"WHEN NEW.text = '{text}' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            connection.exec_driver_sql(
                f"ALTER TABLE inbound_messages ADD CONSTRAINT refuse CHECK (text IS DISTINCT FROM '{text}')"
            )


def drop_refusal(db: sa.Engine) -> None:
    with db.begin() as connection:
        if db.dialect.name == "sqlite":
            connection.exec_driver_sql("DROP TRIGGER refuse")
        else:
            connection.exec_driver_sql("ALTER TABLE inbound_messages DROP CONSTRAINT refuse")


def test_a_request_the_database_refuses_is_a_400_with_the_reason(webhook: Webhook, db: sa.Engine) -> None:
    refuse_text(db, "poison")
    try:
        response = webhook.post(wa_body([wa_message("wamid.GOOD"), wa_message("wamid.BAD", text="poison")]))
        assert response.status_code == 400
        assert response.json is not None
        assert response.json["error"]["code"] == "webhook_rejected"
        assert response.json["error"]["message"].startswith("cannot store this webhook: the database refused a value")
        assert rows(db) == []  # a webhook is stored whole or not at all
        assert webhook.post(wa_body([wa_message("wamid.NEXT")])).status_code == 200
    finally:
        drop_refusal(db)


def test_concurrent_requests_beside_refused_ones_are_stored(app: Flask, db: sa.Engine) -> None:
    refuse_text(db, "poison")
    try:
        bodies = [wa_body([wa_message(f"wamid.R{i}", text="poison" if i % 5 == 0 else "fine")]) for i in range(40)]
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda body: Webhook(app.test_client()).post(body).status_code, bodies))
        assert statuses == [400 if i % 5 == 0 else 200 for i in range(40)]
        assert sorted(r.provider_message_id for r in rows(db)) == sorted(f"wamid.R{i}" for i in range(40) if i % 5)
    finally:
        drop_refusal(db)


def test_the_parsers_limits_are_the_columns_lengths() -> None:
    from chatops.channels import events

    assert conversations.c.account_id.type.length == events.ACCOUNT_ID_LIMIT  # type: ignore[attr-defined]
    assert conversations.c.user_id.type.length == events.USER_ID_LIMIT  # type: ignore[attr-defined]
    assert conversations.c.user_name.type.length == events.USER_NAME_LIMIT  # type: ignore[attr-defined]
    assert inbound_messages.c.provider_message_id.type.length == events.MESSAGE_ID_LIMIT  # type: ignore[attr-defined]
