"""What a simulated user sends, and the webhook body Meta would deliver for it (pure: no I/O).

The bodies are shaped like the real deliveries in ``tests/fixtures/meta`` (``wa_text.json``,
``wa_interactive_button_reply.json``, ``wa_location.json``, ``ms_text.json``, ``ms_quick_reply.json``,
``ms_postback.json``, ``ms_attachment_location.json``) and go through the same parsers as Meta's.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chatops.channels.events import Channel

SIMULATED_PREFIX = "simulated."  # in simulated inbound ids, and the provider id of settled outbound rows
DISPLAY_PHONE_NUMBER = "15550000000"  # the business number shown in WhatsApp webhooks (fictional)
WABA_ID = "100000000000000"  # the WhatsApp Business Account id in ``entry[].id`` (fictional)


@dataclass(frozen=True)
class UserInput:
    """What the simulated user sends: ``text``, a ``button`` press (its id), or a ``location`` (lat, lon)."""

    text: str | None = None
    button: str | None = None
    location: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        given = [value for value in (self.text, self.button, self.location) if value is not None]
        if len(given) != 1:
            raise ValueError("a UserInput is exactly one of text, button or location")

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "button": self.button, "location": list(self.location) if self.location else None}


@dataclass(frozen=True)
class ButtonOffer:
    """How the pressed button was offered to the user, which decides the shape of the press."""

    title: str
    offered_in: str | None = None  # provider id of the bot message showing it (WhatsApp ``context.id``)
    as_list: bool = False  # WhatsApp shows 4-10 choices as a list: the press is a ``list_reply``
    description: str | None = None
    quick_reply: bool = False  # Messenger: a quick reply under a bot message; otherwise a postback (menu)


def build_webhook(
    channel: Channel,
    message: UserInput,
    *,
    account_id: str,
    user_id: str,
    user_name: str | None,
    at: datetime,
    offer: ButtonOffer | None = None,
) -> tuple[bytes, str]:
    """The webhook body for ``message`` sent at ``at``, and its fresh message id (``wamid.simulated.…``/``mid.…``).

    The body is JSON with non-ASCII escaped, as Meta sends it. ``account_id`` is the WhatsApp phone_number_id or
    the Messenger page id. A button press without an ``offer`` is a WhatsApp ``button_reply`` or a Messenger
    postback titled with its id.
    """
    token = uuid.uuid4().hex
    if channel == "whatsapp":
        message_id = f"wamid.{SIMULATED_PREFIX}{token}"
        payload = _whatsapp(message, message_id, account_id, user_id, user_name, at, offer)
    else:
        message_id = f"mid.{SIMULATED_PREFIX}{token}"
        payload = _messenger(message, message_id, account_id, user_id, at, offer)
    return json.dumps(payload).encode(), message_id


def _whatsapp(
    message: UserInput,
    message_id: str,
    account_id: str,
    user_id: str,
    user_name: str | None,
    at: datetime,
    offer: ButtonOffer | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"from": user_id, "id": message_id, "timestamp": str(int(at.timestamp()))}
    if message.button is not None:
        offer = offer or ButtonOffer(message.button)
        if offer.offered_in:
            item["context"] = {"from": DISPLAY_PHONE_NUMBER, "id": offer.offered_in}
        kind = "list_reply" if offer.as_list else "button_reply"
        reply = {"id": message.button, "title": offer.title}
        if offer.as_list and offer.description:
            reply["description"] = offer.description
        item |= {"type": "interactive", "interactive": {"type": kind, kind: reply}}
    elif message.location is not None:
        item |= {"type": "location", "location": {"latitude": message.location[0], "longitude": message.location[1]}}
    else:
        item |= {"type": "text", "text": {"body": message.text}}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": account_id},
        "contacts": [{"profile": {"name": user_name or ""}, "wa_id": user_id}],
        "messages": [item],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    }


def _messenger(
    message: UserInput, message_id: str, page_id: str, user_id: str, at: datetime, offer: ButtonOffer | None
) -> dict[str, Any]:
    millis = int(at.timestamp() * 1000)
    event: dict[str, Any] = {"sender": {"id": user_id}, "recipient": {"id": page_id}, "timestamp": millis}
    if message.button is not None:
        offer = offer or ButtonOffer(message.button)
        if offer.quick_reply:
            event["message"] = {"mid": message_id, "text": offer.title, "quick_reply": {"payload": message.button}}
        else:
            event["postback"] = {"mid": message_id, "title": offer.title, "payload": message.button}
    elif message.location is not None:
        latitude, longitude = message.location
        coordinates = {"coordinates": {"lat": latitude, "long": longitude}}  # the shape the parser reads
        event["message"] = {
            "mid": message_id,
            "attachments": [{"type": "location", "title": "Location", "payload": coordinates}],
        }
    else:
        event["message"] = {"mid": message_id, "text": message.text}
    return {"object": "page", "entry": [{"id": page_id, "time": millis, "messaging": [event]}]}
