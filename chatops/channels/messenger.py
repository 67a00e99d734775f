"""Messenger Platform adapter: ``page`` webhook JSON → events, and :class:`OutboundMessage` → Send API body.

Both functions are pure (no I/O). A webhook carries ``entry[].messaging[]`` events: messages (text, quick
replies, attachments), postbacks, deliveries, reads and reactions. Echoes of the Page's own messages
(``is_echo``) are dropped; so are ``standby`` events (another app owns the thread under the handover protocol)
and events the bot has no use for (opt-ins, referrals without a message, account linking, policy notices).

Messenger's ``seq`` is obsolete and ignored; ``mid`` is absent from postbacks before Graph v11 and from
reactions. Those get a *derived id* (see :func:`derived_id`) so that Meta's redeliveries of the same event
deduplicate like any other message.
"""

from __future__ import annotations

import hashlib
from typing import Any

from chatops.channels._meta_json import as_dict, as_float, as_id, as_list, as_str, clip, unusable, utc_from_epoch
from chatops.channels.events import (
    ACCOUNT_ID_LIMIT,
    MESSAGE_ID_LIMIT,
    USER_ID_LIMIT,
    ChannelNotice,
    Event,
    InboundKind,
    InboundMessage,
    OutboundMessage,
    StatusUpdate,
)
from chatops.errors import ChannelError

WEBHOOK_OBJECT = "page"

TEXT_LIMIT = 2000
QUICK_REPLY_TITLE_LIMIT = 20
MAX_QUICK_REPLIES = 13

_MEDIA_KINDS: dict[str, InboundKind] = {"image": "image", "audio": "audio", "video": "video", "file": "document"}


def parse_messenger(payload: dict[str, Any]) -> list[Event]:
    """Every user message, postback, reaction, delivery and read in a ``page`` webhook, in payload order.

    Raises nothing on unknown content: unknown attachments become kind ``unsupported``, unknown events are
    skipped, events without a sender or timestamp become a :class:`ChannelNotice`.
    """
    events: list[Event] = []
    for entry in as_list(payload.get("entry")):
        entry = as_dict(entry)
        page_id = as_str(entry.get("id"))
        for item in as_list(entry.get("messaging")):
            events.extend(_parse_event(as_dict(item), page_id, entry.get("time")))
    return events


def derived_id(kind: str, sender: str, timestamp: Any, detail: str) -> str:
    """A stable id for an event Meta sends without a ``mid``: ``chatops.<kind>.<hash>``.

    The hash is SHA-256 over sender, the raw millisecond timestamp and ``detail`` (postback payload, reacted mid),
    so a redelivery of the same event gets the same id, and two taps on the same button get two ids.
    """
    digest = hashlib.sha256(f"{sender}\x1f{timestamp}\x1f{detail}".encode()).hexdigest()
    return f"chatops.{kind}.{digest[:32]}"


def _parse_event(event: dict[str, Any], page_id: str | None, entry_time: Any) -> list[Event]:
    message = as_dict(event.get("message"))
    if message.get("is_echo"):
        return []
    raw_sender = as_dict(event.get("sender")).get("id")
    sender = as_id(raw_sender, USER_ID_LIMIT)
    raw_account = as_dict(event.get("recipient")).get("id") or page_id
    account_id = as_id(raw_account, ACCOUNT_ID_LIMIT)
    raw_time = event.get("timestamp", entry_time)
    timestamp = utc_from_epoch(raw_time, milliseconds=True)
    known = [key for key in ("message", "postback", "reaction", "delivery", "read") if key in event]
    if not known:
        return []
    raw_mid = as_dict(event.get(known[0])).get("mid") if known[0] in ("message", "postback") else None
    mid = _mid(raw_mid)
    if not (sender and account_id and timestamp and mid is not None):
        reasons = unusable(
            {
                "sender": (raw_sender, sender),
                "recipient": (raw_account, account_id),
                "timestamp": (raw_time, timestamp),
                "mid": (raw_mid, mid),
            }
        )
        notice = f"malformed Messenger {known[0]} skipped"
        return [ChannelNotice("messenger", account_id or "", None, notice, clip(reasons, 300))]

    def inbound(message_id: str, kind: InboundKind, text: str | None, payload: dict[str, Any]) -> InboundMessage:
        return InboundMessage(
            channel="messenger",
            account_id=account_id,
            user_id=sender,
            provider_message_id=message_id,
            kind=kind,
            timestamp=timestamp,
            text=text,
            payload={"reply_to": None, "forwarded": False, "referral": None, **payload},
            raw=event,
        )

    def status(state: str, mid: str | None, watermark: Any) -> StatusUpdate:
        return StatusUpdate(
            channel="messenger",
            account_id=account_id,
            user_id=sender,
            status=state,  # type: ignore[arg-type]  # "delivered" or "read", both DeliveryStatus
            timestamp=timestamp,
            provider_message_id=mid,
            watermark=utc_from_epoch(watermark, milliseconds=True),
            raw=event,
        )

    if "message" in event:
        kind, text, payload = _message_content(message)
        referral = event.get("referral") or message.get("referral")
        payload["reply_to"] = as_str(as_dict(message.get("reply_to")).get("mid"))
        payload["referral"] = referral if isinstance(referral, dict) else None
        message_id = mid or derived_id("message", sender, raw_time, str(text))
        return [inbound(message_id, kind, text, payload)]
    if "postback" in event:
        postback = as_dict(event.get("postback"))
        title = as_str(postback.get("title"))
        button = as_str(postback.get("payload"))
        message_id = mid or derived_id("postback", sender, raw_time, str(button))
        referral = postback.get("referral")  # a "Get Started" tap from an m.me link carries the ref here
        content = {"button": button, "title": title, "description": None, "source": "postback"}
        return [inbound(message_id, "button", title, {**content, "referral": as_dict(referral) or None})]
    if "reaction" in event:
        reaction = as_dict(event.get("reaction"))
        reacted_mid = as_str(reaction.get("mid"))
        removed = reaction.get("action") == "unreact"
        emoji = "" if removed else as_str(reaction.get("emoji")) or as_str(reaction.get("reaction")) or ""
        detail = f"{reacted_mid}\x1f{reaction.get('action')}\x1f{emoji}"
        payload = {"emoji": emoji, "message_id": reacted_mid, "removed": removed}
        return [inbound(derived_id("reaction", sender, raw_time, detail), "reaction", emoji or None, payload)]
    if "delivery" in event:
        delivery = as_dict(event.get("delivery"))
        mids: list[str | None] = [mid for mid in (as_str(m) for m in as_list(delivery.get("mids"))) if mid]
        return [status("delivered", mid, delivery.get("watermark")) for mid in mids or [None]]
    return [status("read", None, as_dict(event.get("read")).get("watermark"))]


def _mid(raw: Any) -> str | None:
    """A message's or postback's ``mid``: ``""`` when there is none (an id is derived), ``None`` when it is
    longer than the database holds."""
    mid = as_str(raw) or ""
    return mid if len(mid) <= MESSAGE_ID_LIMIT else None


def _message_content(message: dict[str, Any]) -> tuple[InboundKind, str | None, dict[str, Any]]:
    text = as_str(message.get("text"))
    quick_reply = as_dict(message.get("quick_reply"))
    if quick_reply:
        button = as_str(quick_reply.get("payload"))
        return "button", text, {"button": button, "title": text, "description": None, "source": "quick_reply"}
    attachments = [as_dict(a) for a in as_list(message.get("attachments"))]
    if attachments:
        kind, payload = _attachment(attachments[0])
        payload["attachments"] = [
            {"type": as_str(a.get("type")), "url": as_str(as_dict(a.get("payload")).get("url"))} for a in attachments
        ]
        return kind, text, payload
    if text is not None and not message.get("is_unsupported"):
        return "text", text, {}
    return "unsupported", None, {"type": "message", "error_code": None, "error_title": None, "error_details": None}


def _attachment(attachment: dict[str, Any]) -> tuple[InboundKind, dict[str, Any]]:
    attachment_type = as_str(attachment.get("type")) or "unknown"
    payload = as_dict(attachment.get("payload"))
    if attachment_type == "location":
        coordinates = as_dict(payload.get("coordinates"))  # the legacy shape; still what the fixtures carry
        location = {
            "latitude": as_float(coordinates.get("lat")),
            "longitude": as_float(coordinates.get("long")),
            "name": as_str(attachment.get("title")),
            "address": None,
            "url": as_str(attachment.get("url")),
        }
        return "location", location
    if attachment_type in _MEDIA_KINDS:
        sticker_id = as_str(payload.get("sticker_id"))
        kind: InboundKind = "sticker" if sticker_id else _MEDIA_KINDS[attachment_type]
        media = {
            "media_id": sticker_id,
            "mime_type": None,
            "sha256": None,
            "caption": None,
            "filename": as_str(attachment.get("name")) or as_str(payload.get("name")),
            "url": as_str(payload.get("url")),
            "voice": False,
            "animated": False,
        }
        return kind, media
    return "unsupported", {"type": attachment_type, "error_code": None, "error_title": None, "error_details": None}


def messenger_request(user_id: str, message: OutboundMessage) -> dict[str, Any]:
    """The JSON body of ``POST /me/messages`` that answers ``user_id`` (a PSID) with ``message``.

    ``messaging_type`` is ``RESPONSE`` (a reply inside the 24-hour window); buttons become text quick replies.
    ``reply_to`` is not sent (the Send API has no reply context). Raises ChannelError for templates (WhatsApp
    only), empty text, or more than 13 buttons.
    """
    if message.kind == "template":
        raise ChannelError(
            "Messenger cannot send WhatsApp templates", hint="give the stage a plain reply for Messenger"
        )
    if not message.text.strip():
        raise ChannelError("cannot send an empty Messenger message", hint="the reply template rendered no text")
    if len(message.buttons) > MAX_QUICK_REPLIES:
        raise ChannelError(
            f"a Messenger message can offer at most {MAX_QUICK_REPLIES} quick replies, got {len(message.buttons)}",
            hint="split the choices over two stages",
        )
    body: dict[str, Any] = {"text": clip(message.text, TEXT_LIMIT)}
    if message.buttons:
        body["quick_replies"] = [
            {"content_type": "text", "title": clip(b.title, QUICK_REPLY_TITLE_LIMIT), "payload": b.id}
            for b in message.buttons
        ]
    return {"recipient": {"id": user_id}, "messaging_type": "RESPONSE", "message": body}
