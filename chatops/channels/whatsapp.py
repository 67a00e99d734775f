"""WhatsApp Cloud API adapter: webhook JSON → events, and :class:`OutboundMessage` → ``/messages`` request body.

Both functions are pure (no I/O). A webhook carries ``entry[].changes[].value`` objects; each value may hold
``messages`` (from users), ``statuses`` (reports on what the bot sent) and ``errors`` (system-level problems),
and every one of them is parsed. Message types the bot does not understand become kind ``unsupported`` rather
than errors, so one odd message never makes Meta retry a whole batch. Items that lack what identifies them
(id, sender, timestamp), or whose id is too long or timestamp out of range, become a :class:`ChannelNotice`
for the log.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, get_args

from chatops.channels._meta_json import (
    as_dict,
    as_float,
    as_id,
    as_int,
    as_list,
    as_str,
    clip,
    unusable,
    utc_from_epoch,
)
from chatops.channels.events import (
    ACCOUNT_ID_LIMIT,
    MESSAGE_ID_LIMIT,
    USER_ID_LIMIT,
    USER_NAME_LIMIT,
    ChannelNotice,
    DeliveryStatus,
    Event,
    InboundKind,
    InboundMessage,
    OutboundMessage,
    StatusUpdate,
)
from chatops.errors import ChannelError

WEBHOOK_OBJECT = "whatsapp_business_account"

# Limits of the Cloud API (interactive messages reference); longer text is clipped, see _meta_json.clip.
TEXT_LIMIT = 4096
INTERACTIVE_BODY_LIMIT = 1024
BUTTON_TITLE_LIMIT = 20
LIST_ROW_TITLE_LIMIT = 24
LIST_ROW_DESCRIPTION_LIMIT = 72
MAX_REPLY_BUTTONS = 3
MAX_LIST_ROWS = 10
DEFAULT_LIST_BUTTON = "Choose"

_MEDIA_KINDS = ("image", "audio", "video", "document", "sticker")
_STATUSES: frozenset[str] = frozenset(get_args(DeliveryStatus))

Content = tuple[InboundKind, str | None, dict[str, Any]]


def parse_whatsapp(payload: dict[str, Any]) -> list[Event]:
    """Every message, status and error in a ``whatsapp_business_account`` webhook, in payload order.

    Changes of other fields (template or account updates) are skipped. Raises nothing on unknown content.
    """
    events: list[Event] = []
    for entry in as_list(payload.get("entry")):
        for change in as_list(as_dict(entry).get("changes")):
            change = as_dict(change)
            if change.get("field", "messages") == "messages":
                events.extend(_parse_value(as_dict(change.get("value"))))
    return events


def _parse_value(value: dict[str, Any]) -> list[Event]:
    raw_account_id = as_dict(value.get("metadata")).get("phone_number_id")
    account_id = as_id(raw_account_id, ACCOUNT_ID_LIMIT) or ""
    names: dict[str, str] = {}
    for contact in as_list(value.get("contacts")):
        contact = as_dict(contact)
        name = as_str(as_dict(contact.get("profile")).get("name"))
        for key in ("wa_id", "user_id"):  # user_id: the business-scoped user id Meta is rolling out
            if name and (user := as_str(contact.get(key))):
                names[user] = clip(name, USER_NAME_LIMIT)
    events: list[Event] = []
    account = (raw_account_id, account_id or None)
    for message in as_list(value.get("messages")):
        events.append(_parse_message(as_dict(message), account, names))
    for status in as_list(value.get("statuses")):
        events.append(_parse_status(as_dict(status), account))
    for error in as_list(value.get("errors")):
        code, title, details = _first_error([error])
        events.append(ChannelNotice("whatsapp", account_id, code, title or "WhatsApp error", details))
    return events


def _parse_message(message: dict[str, Any], account: tuple[Any, str | None], names: dict[str, str]) -> Event:
    account_id = account[1] or ""
    message_id = as_id(message.get("id"), MESSAGE_ID_LIMIT)
    raw_user = message.get("from") or message.get("from_user_id")
    user_id = as_id(raw_user, USER_ID_LIMIT)
    timestamp = utc_from_epoch(message.get("timestamp"))
    if not (message_id and user_id and timestamp and account_id):
        return _malformed(account, "message", message, user=(raw_user, user_id), timestamp=timestamp)
    msg_type = as_str(message.get("type")) or "unknown"
    reader = _CONTENT_READERS.get(msg_type)
    kind, text, content = reader(message, msg_type) if reader else _unsupported(message, msg_type)
    context = as_dict(message.get("context"))
    referral = message.get("referral")
    payload = {
        **content,
        "reply_to": as_str(context.get("id")),
        "forwarded": bool(context.get("forwarded") or context.get("frequently_forwarded")),
        "referral": referral if isinstance(referral, dict) else None,
    }
    return InboundMessage(
        channel="whatsapp",
        account_id=account_id,
        user_id=user_id,
        provider_message_id=message_id,
        kind=kind,
        timestamp=timestamp,
        text=text,
        user_name=names.get(user_id),
        payload=payload,
        raw=message,
    )


def _text(message: dict[str, Any], _type: str) -> Content:
    return "text", as_str(as_dict(message.get("text")).get("body")), {}


def _interactive(message: dict[str, Any], _type: str) -> Content:
    interactive = as_dict(message.get("interactive"))
    sub_type = as_str(interactive.get("type")) or "unknown"
    if sub_type not in ("button_reply", "list_reply"):  # flows (nfm_reply) and future types
        return _unsupported(message, f"interactive.{sub_type}")
    reply = as_dict(interactive.get(sub_type))
    title = as_str(reply.get("title"))
    return "button", title, _button(as_str(reply.get("id")), title, as_str(reply.get("description")), sub_type)


def _template_button(message: dict[str, Any], _type: str) -> Content:
    button = as_dict(message.get("button"))
    title = as_str(button.get("text"))
    return "button", title, _button(as_str(button.get("payload")) or title, title, None, "template_button")


def _button(button_id: str | None, title: str | None, description: str | None, source: str) -> dict[str, Any]:
    return {"button": button_id, "title": title, "description": description, "source": source}


def _media(message: dict[str, Any], msg_type: str) -> Content:
    media = as_dict(message.get(msg_type))
    caption = as_str(media.get("caption"))
    payload = {
        "media_id": as_str(media.get("id")),
        "mime_type": as_str(media.get("mime_type")),
        "sha256": as_str(media.get("sha256")),
        "caption": caption,
        "filename": as_str(media.get("filename")),
        "url": as_str(media.get("url")),
        "voice": media.get("voice") is True,
        "animated": media.get("animated") is True,
    }
    return msg_type, caption, payload  # type: ignore[return-value]  # msg_type is one of _MEDIA_KINDS


def _location(message: dict[str, Any], _type: str) -> Content:
    location = as_dict(message.get("location"))
    payload = {
        "latitude": as_float(location.get("latitude")),
        "longitude": as_float(location.get("longitude")),
        "name": as_str(location.get("name")),
        "address": as_str(location.get("address")),
        "url": as_str(location.get("url")),
    }
    return "location", None, payload


def _contacts(message: dict[str, Any], _type: str) -> Content:
    cards: list[dict[str, Any]] = []
    for card in as_list(message.get("contacts")):
        card = as_dict(card)
        name = as_dict(card.get("name"))
        phones = [as_dict(p) for p in as_list(card.get("phones"))]
        cards.append(
            {
                "name": as_str(name.get("formatted_name")) or as_str(name.get("first_name")),
                "phones": [p for p in (as_str(p.get("phone")) for p in phones) if p],
                "wa_ids": [w for w in (as_str(p.get("wa_id")) for p in phones) if w],
                "emails": [e for e in (as_str(as_dict(e).get("email")) for e in as_list(card.get("emails"))) if e],
            }
        )
    text = ", ".join(c["name"] for c in cards if c["name"]) or None
    return "contacts", text, {"contacts": cards}


def _reaction(message: dict[str, Any], _type: str) -> Content:
    reaction = as_dict(message.get("reaction"))
    emoji = as_str(reaction.get("emoji")) or ""
    payload = {"emoji": emoji, "message_id": as_str(reaction.get("message_id")), "removed": emoji == ""}
    return "reaction", emoji or None, payload


def _unsupported(message: dict[str, Any], msg_type: str) -> Content:
    if msg_type == "unsupported":  # Meta names what it could not deliver (e.g. "edit") here
        msg_type = as_str(as_dict(message.get("unsupported")).get("type")) or msg_type
    code, title, details = _first_error(as_list(message.get("errors")))
    payload = {"type": msg_type, "error_code": code, "error_title": title, "error_details": details}
    return "unsupported", None, payload


_CONTENT_READERS: dict[str, Callable[[dict[str, Any], str], Content]] = {
    "text": _text,
    "interactive": _interactive,
    "button": _template_button,
    "location": _location,
    "contacts": _contacts,
    "reaction": _reaction,
    **dict.fromkeys(_MEDIA_KINDS, _media),
}


def _parse_status(status: dict[str, Any], account: tuple[Any, str | None]) -> Event:
    account_id = account[1] or ""
    raw_user = status.get("recipient_id") or status.get("recipient_user_id")
    user_id = as_id(raw_user, USER_ID_LIMIT)
    timestamp = utc_from_epoch(status.get("timestamp"))
    state = as_str(status.get("status"))
    message_id = as_id(status.get("id"), MESSAGE_ID_LIMIT)
    if not (message_id and user_id and timestamp and account_id):
        return _malformed(account, "status", status, user=(raw_user, user_id), timestamp=timestamp)
    if state not in _STATUSES:
        return ChannelNotice(
            "whatsapp", account_id, None, f"unknown WhatsApp status {clip(repr(state), 40)} ignored", message_id
        )
    code, title, details = _first_error(as_list(status.get("errors")))
    return StatusUpdate(
        channel="whatsapp",
        account_id=account_id,
        user_id=user_id,
        status=state,  # type: ignore[arg-type]  # checked against DeliveryStatus above
        timestamp=timestamp,
        provider_message_id=message_id,
        error_code=code,
        error_title=title,
        error_details=details,
        raw=status,
    )


def _first_error(errors: list[Any]) -> tuple[int | None, str | None, str | None]:
    """(code, title, details) of the first error object; Meta sends one per item in practice."""
    if not errors:
        return None, None, None
    error = as_dict(errors[0])
    title = as_str(error.get("title")) or as_str(error.get("message"))
    return as_int(error.get("code")), title, as_str(as_dict(error.get("error_data")).get("details"))


def _malformed(
    account: tuple[Any, str | None],
    what: str,
    item: dict[str, Any],
    *,
    user: tuple[Any, str | None],
    timestamp: Any,
) -> ChannelNotice:
    sender = "from" if what == "message" else "recipient_id"
    reasons = unusable(
        {
            "id": (item.get("id"), as_id(item.get("id"), MESSAGE_ID_LIMIT)),
            sender: user,
            "timestamp": (item.get("timestamp"), timestamp),
            "phone_number_id": account,
        }
    )
    title = f"malformed WhatsApp {what} skipped"
    return ChannelNotice("whatsapp", account[1] or "", None, title, clip(reasons, 300))


def whatsapp_request(user_id: str, message: OutboundMessage) -> dict[str, Any]:
    """The JSON body of ``POST /{phone_number_id}/messages`` that sends ``message`` to ``user_id`` (a wa_id).

    Text goes out as ``text`` (link previews off); with 1-3 buttons as interactive reply buttons, with 4-10 as
    an interactive list. Titles and bodies longer than Meta's limits are clipped. Raises ChannelError for a
    message Meta would refuse: empty text, more than 10 buttons, a template without a name.
    """
    body: dict[str, Any] = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": user_id}
    if message.reply_to:
        body["context"] = {"message_id": message.reply_to}
    if message.kind == "template":
        if not message.template_name:
            raise ChannelError("a WhatsApp template message needs template_name")
        template: dict[str, Any] = {"name": message.template_name, "language": {"code": message.template_language}}
        if message.template_params:
            parameters = [{"type": "text", "text": p} for p in message.template_params]
            template["components"] = [{"type": "body", "parameters": parameters}]
        return {**body, "type": "template", "template": template}
    if not message.text.strip():
        raise ChannelError("cannot send an empty WhatsApp message", hint="the reply template rendered no text")
    if not message.buttons:
        return {**body, "type": "text", "text": {"preview_url": False, "body": clip(message.text, TEXT_LIMIT)}}
    return {**body, "type": "interactive", "interactive": _interactive_body(message)}


def _interactive_body(message: OutboundMessage) -> dict[str, Any]:
    text = {"text": clip(message.text, INTERACTIVE_BODY_LIMIT)}
    buttons = message.buttons
    if len(buttons) <= MAX_REPLY_BUTTONS:
        replies = [
            {"type": "reply", "reply": {"id": b.id, "title": clip(b.title, BUTTON_TITLE_LIMIT)}} for b in buttons
        ]
        return {"type": "button", "body": text, "action": {"buttons": replies}}
    if len(buttons) > MAX_LIST_ROWS:
        raise ChannelError(
            f"a WhatsApp message can offer at most {MAX_LIST_ROWS} choices, got {len(buttons)}",
            hint="split the choices over two stages",
        )
    rows = []
    for b in buttons:
        row = {"id": b.id, "title": clip(b.title, LIST_ROW_TITLE_LIMIT)}
        if b.description:
            row["description"] = clip(b.description, LIST_ROW_DESCRIPTION_LIMIT)
        rows.append(row)
    label = clip(message.list_button or DEFAULT_LIST_BUTTON, BUTTON_TITLE_LIMIT)
    return {"type": "list", "body": text, "action": {"button": label, "sections": [{"rows": rows}]}}
