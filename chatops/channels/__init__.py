"""Message input/output per channel: signature, webhook parsing, normalised events, sending.

Works on bytes, dicts and dataclasses only; ``web/`` adapts Flask requests to it and the engine's sender calls
:class:`GraphClient`. The flow for one webhook::

    verify_signature(body, header, secret)      # raw bytes, before anything else
    events = parse_webhook(channel, body)       # InboundMessage | StatusUpdate | ChannelNotice, all of them

and for one reply: ``ADAPTERS[channel].build_request(user_id, message)`` then ``GraphClient.send_…``.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chatops.channels._meta_json import clip
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
from chatops.text import clean_value

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
    """Decode a webhook body (already signature-checked) and return all its events, every text in them clean.

    The decoded JSON is made storable once, here, before either parser reads it (:func:`decode_webhook`), so
    the events, their payloads and the raw JSON kept beside them are all clean. Raises WebhookError 400 when
    the body is not a UTF-8 JSON object, holds a number no database can hold, or when its ``object`` is not
    this channel's (a WhatsApp app subscribed to the Messenger URL, say).
    """
    adapter = ADAPTERS[channel]
    payload = decode_webhook(body)
    received = payload.get("object")
    if received != adapter.webhook_object:
        raise WebhookError(
            f"{channel} webhook has object {clip(repr(received), 60)}, expected {adapter.webhook_object!r}",
            status=400,
            hint=f"subscribe the Meta app's {adapter.webhook_object!r} webhook to /webhooks/{channel}",
        )
    return adapter.parse(payload)


# A \u escape that decodes to NUL or to a surrogate (alone, or half of a pair: the regex cannot tell cheaply).
_UNSTORABLE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def decode_webhook(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``, with every NUL and lone surrogate in its strings and keys replaced by
    U+FFFD (:mod:`chatops.text`), so that nothing taken from it can fail to be stored or sent.

    Strict UTF-8 (RFC 8259; a leading byte order mark is ignored) leaves ``\\u`` escapes as the only way such
    characters get in, so a clean body, by far the common case, costs one regex search (~1 us for 1 KB)
    instead of a copy of the whole tree (~20 us). Raises WebhookError 400 for anything but a JSON object, and
    for numbers no database holds: NaN and Infinity (not JSON), integers past Python's 4,300-digit limit, and
    floats past 1.8e308.
    """
    try:
        text = body.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        raise WebhookError(f"invalid JSON: not UTF-8 ({exc.reason} at byte {exc.start})", status=400) from None
    try:
        payload = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise WebhookError(f"invalid JSON: {exc}", status=400) from None
    except _NumberError as exc:
        raise WebhookError(f"invalid JSON: {exc}", status=400) from None
    except ValueError as exc:  # int() past sys.get_int_max_str_digits(): the decoder says nothing of where
        raise WebhookError(f"invalid JSON: {_describe_long_integer(text, exc)}", status=400) from None
    except RecursionError:  # "[[[[…" past the decoder's depth limit: hostile, not Meta
        raise WebhookError("invalid JSON: nested too deeply", status=400) from None
    if not isinstance(payload, dict):
        raise WebhookError(f"invalid JSON: expected an object, got {type(payload).__name__}", status=400)
    if _UNSTORABLE_ESCAPE.search(text) is not None:
        cleaned: dict[str, Any] = clean_value(payload)
        return cleaned
    return payload


class _NumberError(ValueError):
    """A number in the body that no database holds."""


def _refuse_constant(name: str) -> Any:
    raise _NumberError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if number in (float("inf"), float("-inf")):
        raise _NumberError(f"the number {clip(literal, 40)} is out of range (at most ±1.8e308)")
    return number


# One decoder for every request: json.loads builds a new one per call when given hooks.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def _describe_long_integer(text: str, exc: ValueError) -> str:
    """Which key holds the integer past Python's digit limit, for the 400's message (the error path only)."""
    limit = sys.get_int_max_str_digits()
    match = re.search(rf'"((?:[^"\\]|\\.){{0,100}})"\s*:\s*-?(\d{{{limit + 1},}})', text)
    if match is None:
        return f"a number is too long ({exc})"
    return f"the number in {match.group(1)!r} has {len(match.group(2))} digits (at most {limit})"
