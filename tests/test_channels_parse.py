"""Webhook parsing: every Meta fixture, whole batches, odd and hostile payloads."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatops.channels import (
    ChannelNotice,
    InboundMessage,
    StatusUpdate,
    parse_messenger,
    parse_webhook,
    parse_whatsapp,
    sign,
    verify_signature,
)
from chatops.channels.messenger import derived_id
from chatops.errors import WebhookError
from tests.conftest import MetaFixtures

PYWA_PHONE, META_PHONE, PAGE = "1122334455667", "106540352242922", "234554838031189"
PYWA_USER, META_USER, PSID = "972987654321", "16505551234", "1739141089378194"
MEDIA_NONE = {"caption": None, "filename": None, "url": None, "voice": False, "animated": False}
NO_CONTEXT = {"reply_to": None, "forwarded": False, "referral": None}


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def pywa(kind: str, seconds: int, **fields: Any) -> dict[str, Any]:
    return {
        "type": InboundMessage,
        "account_id": PYWA_PHONE,
        "user_id": PYWA_USER,
        "user_name": "Test Name",
        "provider_message_id": "wamid.xyzxyz",
        "kind": kind,
        "timestamp": utc(seconds),
        **fields,
    }


# What each fixture parses to: the event class, its fields, and a subset of ``payload``.
EXPECTED: dict[str, list[dict[str, Any]]] = {
    "wa_text": [pywa("text", 1697043223, text="Body Text", payload=NO_CONTEXT)],
    "wa_text_reply_with_context": [
        pywa("text", 1697044746, text="replied text", payload={**NO_CONTEXT, "reply_to": "wamid.xyzxyz=="})
    ],
    "wa_image_with_url": [
        pywa(
            "image",
            1697043379,
            text=None,
            payload={
                "media_id": "65463453",
                "mime_type": "image/jpeg",
                "sha256": "4654+8g=",
                "caption": None,
                "url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=65463453&source=webhook"
                "&ext=487r9re&hash=heiwchueowbcew-dnedcw",
            },
        )
    ],
    "wa_audio_voice": [
        pywa(
            "audio",
            1697043473,
            payload={
                **MEDIA_NONE,
                "media_id": "1234567890987654321",
                "mime_type": "audio/ogg; codecs=opus",
                "voice": True,
            },
        )
    ],
    "wa_document": [
        pywa(
            "document",
            1697043666,
            text="caption",
            payload={
                "media_id": "1234567890987654321",
                "mime_type": "application/pdf",
                "caption": "caption",
                "filename": "filename.pdf",
                "sha256": "grwfwe/ZPx0wAbdfbdeFUNItPZ0RylL8gGUvdt3YFqc18SY=",
                "forwarded": True,
                "reply_to": None,
            },
        )
    ],
    "wa_sticker_animated": [
        pywa("sticker", 1697043785, payload={**MEDIA_NONE, "mime_type": "image/webp", "animated": True})
    ],
    "wa_location": [
        pywa(
            "location",
            1697044557,
            text=None,
            payload={"latitude": 12.25089, "longitude": 43.90539, "name": None, "address": None, "forwarded": True},
        )
    ],
    "wa_reaction": [
        pywa(
            "reaction", 1697044456, text="😮", payload={"emoji": "😮", "message_id": "wamid.yzxyzx=", "removed": False}
        )
    ],
    "wa_reaction_removed": [
        pywa("reaction", 1697044456, text=None, payload={"emoji": "", "message_id": "wamid.yzxyzx=", "removed": True})
    ],
    "wa_button_template_quick_reply": [
        pywa(
            "button",
            1698269027,
            provider_message_id="wamid.xsidjw",
            text="title",
            payload={
                "button": "callback_data",
                "title": "title",
                "source": "template_button",
                "reply_to": "wamid.xyzxyz==",
            },
        )
    ],
    "wa_interactive_button_reply": [
        {
            "type": InboundMessage,
            "account_id": META_PHONE,
            "user_id": META_USER,
            "user_name": "Pablo Morales",
            "provider_message_id": "wamid.HBgLMTY0NjcwNDM1OTUVAgASGBQzQThBREYwNzc2RDc2QjA1QTIwMgA=",
            "kind": "button",
            "text": "Change",
            "timestamp": utc(1714510003),
            "payload": {
                "button": "change-button",
                "title": "Change",
                "description": None,
                "source": "button_reply",
                "reply_to": "wamid.HBgLMTY0NjcwNDM1OTUVAgARGBJBM0Y4RUU0RUNFQkFDMjYzQUMA",
            },
        }
    ],
    "wa_interactive_list_reply": [
        {
            "type": InboundMessage,
            "account_id": META_PHONE,
            "user_id": META_USER,
            "kind": "button",
            "text": "Priority Mail Express",
            "timestamp": utc(1712595443),
            "payload": {"button": "priority_express", "description": "Next Day to 2 Days", "source": "list_reply"},
        }
    ],
    "wa_unsupported_131051": [
        {
            "type": InboundMessage,
            "account_id": META_PHONE,
            "user_id": META_USER,
            "user_name": "Sheena Nelson",
            "kind": "unsupported",
            "text": None,
            "payload": {
                "type": "edit",
                "error_code": 131051,
                "error_title": "Message type unknown",
                "error_details": "Message type is currently not supported.",
            },
        }
    ],
    "wa_status_sent": [
        {
            "type": StatusUpdate,
            "account_id": META_PHONE,
            "user_id": META_USER,
            "status": "sent",
            "timestamp": utc(1750030073),
            "provider_message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=",
            "error_code": None,
        }
    ],
    "wa_status_delivered": [
        {
            "type": StatusUpdate,
            "account_id": PYWA_PHONE,
            "user_id": PYWA_USER,
            "status": "delivered",
            "timestamp": utc(1698266945),
            "provider_message_id": "wamid.xyzxyz",
        }
    ],
    "wa_status_read": [
        {"type": StatusUpdate, "status": "read", "timestamp": utc(1689380458), "provider_message_id": "wamid.xyzxyz"}
    ],
    "wa_status_failed_131049": [
        {
            "type": StatusUpdate,
            "status": "failed",
            "error_code": 131049,
            "error_title": "This message was not delivered to maintain healthy ecosystem engagement.",
            "error_details": "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
        }
    ],
    "wa_status_failed_131047_real": [
        {
            "type": StatusUpdate,
            "account_id": "86501452171734",
            "status": "failed",
            "timestamp": utc(1744609253),
            "provider_message_id": "wamid.H=====================================",
            "error_code": 131047,
            "error_title": "Re-engagement message",
        }
    ],
    "wa_value_errors_130429": [
        {
            "type": ChannelNotice,
            "channel": "whatsapp",
            "account_id": META_PHONE,
            "code": 130429,
            "title": "Rate limit hit",
        }
    ],
    "ms_text": [
        {
            "type": InboundMessage,
            "channel": "messenger",
            "account_id": PAGE,
            "user_id": PSID,
            "user_name": None,
            "provider_message_id": "mid.$cAAEIQkYwD5bNu1Kzh1hgg1r2bI_K",
            "kind": "text",
            "text": "This is a text message",
            "timestamp": datetime(2018, 2, 12, 12, 46, 30, 791000, tzinfo=UTC),
            "payload": NO_CONTEXT,
        }
    ],
    "ms_quick_reply": [
        {
            "type": InboundMessage,
            "provider_message_id": "mid.1483715260354:77ac33da15",
            "kind": "button",
            "text": "CLICK HERE",
            "payload": {"button": "some_payload", "title": "CLICK HERE", "source": "quick_reply"},
        }
    ],
    "ms_postback": [
        {
            "type": InboundMessage,
            "account_id": PAGE,
            "user_id": PSID,
            "provider_message_id": derived_id("postback", PSID, 1520151355121, "getstarted"),
            "kind": "button",
            "text": "Aan de slag",
            "timestamp": utc(1520151355.121),
            "payload": {"button": "getstarted", "title": "Aan de slag", "source": "postback"},
        }
    ],
    "ms_echo_text": [],
    "ms_delivery": [
        {
            "type": StatusUpdate,
            "channel": "messenger",
            "account_id": PAGE,
            "user_id": PSID,
            "status": "delivered",
            "provider_message_id": "mid.1488128564673:5e67fce3a6",
            "watermark": utc(1488128564.613),
            "timestamp": utc(1488128564.944),
        }
    ],
    "ms_read": [
        {
            "type": StatusUpdate,
            "status": "read",
            "provider_message_id": None,
            "watermark": utc(1518439571.4),
            "timestamp": utc(1518439572.105),
        }
    ],
    "ms_attachment_image": [
        {
            "type": InboundMessage,
            "provider_message_id": "mid.$cAAFSuiOlE3doibGxAFiWxoQ_dosX",
            "kind": "image",
            "text": None,
            "payload": {"media_id": None, "caption": None},
        }
    ],
    "ms_attachment_location": [
        {
            "type": InboundMessage,
            "kind": "location",
            "payload": {"latitude": 52.376232, "longitude": 4.838296, "name": "Someone's Location"},
        }
    ],
}
WEBHOOK_FIXTURES = sorted(EXPECTED)


def channel_of(name: str) -> str:
    return "whatsapp" if name.startswith("wa_") else "messenger"


def assert_event(event: object, expected: dict[str, Any]) -> None:
    expected = dict(expected)
    assert type(event) is expected.pop("type")
    payload = expected.pop("payload", {})
    for key, value in expected.items():
        assert getattr(event, key) == value, key
    for key, value in payload.items():
        assert event.payload[key] == value, f"payload[{key!r}]"  # type: ignore[attr-defined]


def test_every_webhook_fixture_has_expectations(meta_fixture: MetaFixtures) -> None:
    responses = {"ms_send_api_response", "ms_send_api_error_551", "wa_send_api_response"}
    assert set(meta_fixture.names()) - responses == set(EXPECTED)


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_fixture_parses_to_expected_events(meta_fixture: MetaFixtures, name: str) -> None:
    events = parse_webhook(channel_of(name), meta_fixture.bytes(name))  # type: ignore[arg-type]
    assert len(events) == len(EXPECTED[name])
    for event, expected in zip(events, EXPECTED[name], strict=True):
        assert_event(event, expected)
        if isinstance(event, InboundMessage | StatusUpdate):
            assert event.timestamp.tzinfo is UTC
            assert event.raw  # the provider's own object is kept for audit and replay


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_ascii_escaped_reencoding_verifies_and_parses_the_same(meta_fixture: MetaFixtures, name: str) -> None:
    original = meta_fixture.bytes(name)
    escaped = json.dumps(json.loads(original), ensure_ascii=True).encode()
    verify_signature(escaped, sign(escaped, "s3cret"), "s3cret")
    channel = channel_of(name)
    assert parse_webhook(channel, escaped) == parse_webhook(channel, original)  # type: ignore[arg-type]


def test_a_signature_over_the_file_does_not_cover_its_reencoding(meta_fixture: MetaFixtures) -> None:
    original = meta_fixture.bytes("wa_reaction")  # carries a non-ASCII emoji
    escaped = json.dumps(json.loads(original), ensure_ascii=True).encode()
    with pytest.raises(WebhookError):
        verify_signature(escaped, sign(original, "s3cret"), "s3cret")


def whatsapp_message(n: int) -> dict[str, Any]:
    kinds = [
        {"type": "text", "text": {"body": f"message {n}"}},
        {"type": "image", "image": {"id": f"media-{n}", "mime_type": "image/jpeg", "caption": f"photo {n}"}},
        {"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": "yes", "title": "Yes"}}},
        {"type": "order", "order": {"catalog_id": "1"}},
    ]
    return {"from": f"4917{n:08d}", "id": f"wamid.batch{n:05d}", "timestamp": str(1700000000 + n), **kinds[n % 4]}


def test_a_1000_message_batch_parses_whole_in_order() -> None:
    entries = []
    for e in range(10):
        changes = []
        for c in range(2):
            messages = [whatsapp_message(e * 100 + c * 50 + i) for i in range(50)]
            contacts = [{"profile": {"name": f"User {m['from']}"}, "wa_id": m["from"]} for m in messages]
            value = {"metadata": {"phone_number_id": f"phone-{c}"}, "contacts": contacts, "messages": messages}
            changes.append({"field": "messages", "value": value})
        entries.append({"id": f"waba-{e}", "changes": changes})
    body = json.dumps({"object": "whatsapp_business_account", "entry": entries}).encode()
    events = parse_webhook("whatsapp", body)
    assert len(events) == 1000
    assert all(isinstance(event, InboundMessage) for event in events)
    assert [e.provider_message_id for e in events] == [f"wamid.batch{n:05d}" for n in range(1000)]  # type: ignore[union-attr]
    assert [e.kind for e in events[:4]] == ["text", "image", "button", "unsupported"]  # type: ignore[union-attr]
    last = events[-1]
    assert isinstance(last, InboundMessage)
    assert (last.account_id, last.user_id, last.user_name) == ("phone-1", "491700000999", "User 491700000999")
    assert last.payload["type"] == "order"


def wa_envelope(value: dict[str, Any]) -> dict[str, Any]:
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "P1"}, **value}
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "W", "changes": [{"field": "messages", "value": value}]}],
    }


def test_messages_and_statuses_in_one_value_are_all_parsed() -> None:
    value = {
        "messages": [whatsapp_message(1), whatsapp_message(2)],
        "statuses": [
            {"id": "wamid.out1", "status": "played", "timestamp": "1700000100", "recipient_id": "4917"},
            {"id": "wamid.out2", "status": "delivered", "timestamp": "1700000101", "recipient_id": "4917"},
        ],
        "errors": [{"code": 131000, "title": "Something went wrong"}],
    }
    events = parse_whatsapp(wa_envelope(value))
    assert [type(e).__name__ for e in events] == [
        "InboundMessage",
        "InboundMessage",
        "StatusUpdate",
        "StatusUpdate",
        "ChannelNotice",
    ]
    assert [e.status for e in events if isinstance(e, StatusUpdate)] == ["played", "delivered"]


def test_whatsapp_referral_contacts_and_bsuid_name() -> None:
    referral = {"source_url": "https://fb.me/x", "source_id": "120", "source_type": "ad", "ctwa_clid": "Aff"}
    card = {
        "name": {"formatted_name": "Ada Lovelace", "first_name": "Ada"},
        "phones": [{"phone": "+44 20 7946 0000", "wa_id": "442079460000", "type": "WORK"}],
        "emails": [{"email": "ada@example.org"}],
    }
    value = {
        "contacts": [{"profile": {"name": "Grace"}, "user_id": "US.1"}],
        "messages": [
            {
                "from_user_id": "US.1",
                "id": "wamid.c1",
                "timestamp": "1700000000",
                "type": "contacts",
                "contacts": [card],
            },
            {**whatsapp_message(0), "referral": referral, "context": {"frequently_forwarded": True}},
        ],
    }
    contacts, text = parse_whatsapp(wa_envelope(value))
    assert isinstance(contacts, InboundMessage)
    assert isinstance(text, InboundMessage)
    assert (contacts.kind, contacts.user_id, contacts.user_name, contacts.text) == (
        "contacts",
        "US.1",
        "Grace",
        "Ada Lovelace",
    )
    assert contacts.payload["contacts"] == [
        {
            "name": "Ada Lovelace",
            "phones": ["+44 20 7946 0000"],
            "wa_ids": ["442079460000"],
            "emails": ["ada@example.org"],
        }
    ]
    assert text.payload["referral"] == referral
    assert text.payload["forwarded"] is True


def test_unknown_types_statuses_and_fields_never_raise() -> None:
    value = {
        "messages": [
            {"from": "1", "id": "wamid.a", "timestamp": "1700000000", "type": "hologram", "hologram": {}},
            {
                "from": "1",
                "id": "wamid.b",
                "timestamp": "1700000000",
                "type": "interactive",
                "interactive": {"type": "nfm_reply"},
            },
            {"from": "1", "timestamp": "1700000000", "type": "text"},  # no id: cannot be stored
        ],
        "statuses": [{"id": "wamid.c", "status": "deleted", "timestamp": "1700000000", "recipient_id": "1"}],
    }
    payload = wa_envelope(value)
    payload["entry"][0]["changes"].append({"field": "message_template_status_update", "value": {"event": "APPROVED"}})
    hologram, flow, no_id, deleted = parse_whatsapp(payload)
    assert isinstance(hologram, InboundMessage)
    assert hologram.kind == "unsupported"
    assert hologram.payload["type"] == "hologram"
    assert isinstance(flow, InboundMessage)
    assert flow.payload["type"] == "interactive.nfm_reply"
    assert isinstance(no_id, ChannelNotice)
    assert "malformed WhatsApp message" in no_id.title
    assert isinstance(deleted, ChannelNotice)
    assert "'deleted'" in deleted.title


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
message_like = st.fixed_dictionaries(
    {"from": json_values, "id": json_values, "timestamp": json_values, "type": json_values},
    optional={"text": json_values, "interactive": json_values, "image": json_values, "context": json_values},
)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(messages=st.lists(message_like | json_values, max_size=4), statuses=json_values, contacts=json_values)
def test_whatsapp_parser_survives_arbitrary_shapes(messages: list[Any], statuses: Any, contacts: Any) -> None:
    events = parse_whatsapp(wa_envelope({"messages": messages, "statuses": statuses, "contacts": contacts}))
    assert all(isinstance(e, InboundMessage | StatusUpdate | ChannelNotice) for e in events)


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(
    events=st.lists(
        st.dictionaries(
            st.sampled_from(
                ["sender", "recipient", "timestamp", "message", "postback", "delivery", "read", "reaction"]
            ),
            json_values,
        ),
        max_size=4,
    )
)
def test_messenger_parser_survives_arbitrary_shapes(events: list[dict[str, Any]]) -> None:
    parsed = parse_messenger({"object": "page", "entry": [{"id": "P", "time": 1, "messaging": events}]})
    assert all(isinstance(e, InboundMessage | StatusUpdate | ChannelNotice) for e in parsed)


def ms_envelope(*events: dict[str, Any], page: str = PAGE) -> dict[str, Any]:
    return {"object": "page", "entry": [{"id": page, "time": 1700000000000, "messaging": list(events)}]}


def ms_event(ts: int, **content: Any) -> dict[str, Any]:
    return {"sender": {"id": PSID}, "recipient": {"id": PAGE}, "timestamp": ts, **content}


def test_messenger_postback_ids_are_stable_and_current_mids_win() -> None:
    old = ms_event(1700000000000, postback={"payload": "track", "title": "Track"})
    (first,) = parse_messenger(ms_envelope(old))
    (again,) = parse_messenger(ms_envelope(copy.deepcopy(old)))  # Meta's redelivery
    (later,) = parse_messenger(ms_envelope({**old, "timestamp": 1700000005000}))  # a second tap
    (current,) = parse_messenger(ms_envelope({**old, "postback": {**old["postback"], "mid": "m_abc"}}))
    assert isinstance(first, InboundMessage)
    assert isinstance(again, InboundMessage)
    assert isinstance(later, InboundMessage)
    assert first.provider_message_id == again.provider_message_id
    assert first.provider_message_id.startswith("chatops.postback.")
    assert later.provider_message_id != first.provider_message_id
    assert isinstance(current, InboundMessage)
    assert current.provider_message_id == "m_abc"


def test_messenger_batch_with_deliveries_reactions_stickers_files_and_standby() -> None:
    payload = ms_envelope(
        ms_event(1, message={"mid": "m_1", "text": "hi", "reply_to": {"mid": "m_0"}}),
        ms_event(2, delivery={"mids": ["m_out1", "m_out2"], "watermark": 1700000000000}),
        ms_event(3, reaction={"mid": "m_out1", "action": "react", "emoji": "❤️", "reaction": "love"}),
        ms_event(4, reaction={"mid": "m_out1", "action": "unreact"}),
        ms_event(
            5,
            message={
                "mid": "m_5",
                "attachments": [{"type": "image", "payload": {"url": "u", "sticker_id": 369239263222822}}],
            },
        ),
        ms_event(
            6,
            message={
                "mid": "m_6",
                "attachments": [
                    {"type": "file", "payload": {"url": "f.pdf"}},
                    {"type": "image", "payload": {"url": "i"}},
                ],
            },
        ),
        ms_event(7, message={"mid": "m_7", "attachments": [{"type": "fallback", "payload": {"url": "x"}}]}),
        ms_event(8, optin={"ref": "x"}),  # not a message: skipped
    )
    payload["entry"].append({"id": PAGE, "time": 9, "standby": [ms_event(9, message={"mid": "m_9", "text": "x"})]})
    events = parse_messenger(payload)
    kinds = [e.kind if isinstance(e, InboundMessage) else e.status for e in events]  # type: ignore[union-attr]
    assert kinds == ["text", "delivered", "delivered", "reaction", "reaction", "sticker", "document", "unsupported"]
    text, out1, out2, react, unreact, sticker, document, fallback = events
    assert isinstance(text, InboundMessage)
    assert text.payload["reply_to"] == "m_0"
    assert [out1.provider_message_id, out2.provider_message_id] == ["m_out1", "m_out2"]  # type: ignore[union-attr]
    assert isinstance(react, InboundMessage)
    assert react.payload == {
        **NO_CONTEXT,
        "emoji": "❤️",
        "message_id": "m_out1",
        "removed": False,
    }
    assert isinstance(unreact, InboundMessage)
    assert unreact.payload["removed"] is True
    assert react.provider_message_id != unreact.provider_message_id
    assert isinstance(sticker, InboundMessage)
    assert sticker.payload["media_id"] == "369239263222822"
    assert isinstance(document, InboundMessage)
    assert [a["type"] for a in document.payload["attachments"]] == [
        "file",
        "image",
    ]
    assert isinstance(fallback, InboundMessage)
    assert fallback.payload["type"] == "fallback"


@pytest.mark.parametrize(
    ("channel", "body", "message"),
    [
        ("whatsapp", b"{not json", "invalid JSON: "),
        ("messenger", b"\xff\xfe", "invalid JSON: "),
        ("whatsapp", b"[1, 2]", "invalid JSON: expected an object, got list"),
        (
            "whatsapp",
            b'{"object": "page", "entry": []}',
            "whatsapp webhook has object 'page', expected 'whatsapp_business_account'",
        ),
        ("messenger", b'{"entry": []}', "messenger webhook has object None, expected 'page'"),
        ("whatsapp", b"[" * 100_000, "invalid JSON: nested too deeply"),
    ],
)
def test_parse_webhook_refuses_with_400(channel: str, body: bytes, message: str) -> None:
    with pytest.raises(WebhookError) as caught:
        parse_webhook(channel, body)  # type: ignore[arg-type]
    assert caught.value.status == 400
    assert str(caught.value).startswith(message)
