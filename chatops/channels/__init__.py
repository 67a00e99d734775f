"""Message input/output per channel: signature, webhook parsing, normalised events, sending.

Works on bytes, dicts and dataclasses only; ``web/`` adapts Flask requests to it and the engine's sender calls
:class:`GraphClient`. The flow for one webhook::

    verify_signature(body, header, secret)      # raw bytes, before anything else
    events = parse_webhook(channel, body)       # InboundMessage | StatusUpdate | ChannelNotice, all of them

and for one reply: ``ADAPTERS[channel].build_request(user_id, message)`` then ``GraphClient.send_…``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatops.channels.events import (
    CHANNELS,
    Button,
    Channel,
    ChannelNotice,
    Event,
    InboundMessage,
    OutboundMessage,
    StatusUpdate,
)
from chatops.channels.graph import GraphClient, is_token_error, is_transient
from chatops.channels.messenger import messenger_request, parse_messenger
from chatops.channels.signature import sign, verify_signature, verify_subscription
from chatops.channels.whatsapp import parse_whatsapp, whatsapp_request
from chatops.errors import WebhookError

__all__ = [
    "ADAPTERS",
    "CHANNELS",
    "Button",
    "Channel",
    "ChannelAdapter",
    "ChannelNotice",
    "Event",
    "GraphClient",
    "InboundMessage",
    "OutboundMessage",
    "StatusUpdate",
    "is_token_error",
    "is_transient",
    "messenger_request",
    "parse_messenger",
    "parse_webhook",
    "parse_whatsapp",
    "sign",
    "verify_signature",
    "verify_subscription",
    "whatsapp_request",
]


@dataclass(frozen=True)
class ChannelAdapter:
    """The pure, per-channel half of a channel: what its webhooks say and how its request bodies look."""

    channel: Channel
    webhook_object: str  # the ``object`` field every webhook of this channel carries
    parse: Callable[[dict[str, Any]], list[Event]]
    build_request: Callable[[str, OutboundMessage], dict[str, Any]]


ADAPTERS: dict[Channel, ChannelAdapter] = {
    "whatsapp": ChannelAdapter("whatsapp", "whatsapp_business_account", parse_whatsapp, whatsapp_request),
    "messenger": ChannelAdapter("messenger", "page", parse_messenger, messenger_request),
}


def parse_webhook(channel: Channel, body: bytes) -> list[Event]:
    """Decode a webhook body (already signature-checked) and return all its events.

    Raises WebhookError 400 when the body is not a JSON object, or when its ``object`` is not this channel's
    (a WhatsApp app subscribed to the Messenger URL, say).
    """
    adapter = ADAPTERS[channel]
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WebhookError(f"invalid JSON: {exc}", status=400) from None
    except RecursionError:  # "[[[[…" past the decoder's depth limit: hostile, not Meta
        raise WebhookError("invalid JSON: nested too deeply", status=400) from None
    if not isinstance(payload, dict):
        raise WebhookError(f"invalid JSON: expected an object, got {type(payload).__name__}", status=400)
    received = payload.get("object")
    if received != adapter.webhook_object:
        raise WebhookError(
            f"{channel} webhook has object {received!r}, expected {adapter.webhook_object!r}",
            status=400,
            hint=f"subscribe the Meta app's {adapter.webhook_object!r} webhook to /webhooks/{channel}",
        )
    return adapter.parse(payload)
