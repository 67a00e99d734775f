"""The built-in variable providers every template can use: ``user``, ``conversation``, ``clock``, ``message``.

They read only the :class:`~chatops.templating.providers.ProviderContext` of the turn (no I/O, no clock of their
own), so they always succeed for a well-formed context. ``message_variables`` defines how an inbound message looks to
templates, whatever its kind.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chatops.config.schedule import BusinessHours, InvalidValue, parse_business_hours
from chatops.errors import BotDefinitionError
from chatops.templating.sandbox import Namespace

if TYPE_CHECKING:
    from chatops.channels.events import InboundMessage
    from chatops.templating.providers import ProviderContext, UserInfo

MASK = "•"
_MEDIA_KINDS = frozenset({"image", "audio", "video", "document", "sticker"})
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# Every key is always present in ``message`` (None when the kind has no such field), so templates and the linter
# can rely on the names whatever the user sent.
MESSAGE_FIELDS: dict[str, str] = {
    "id": "the channel's message id",
    "channel": "whatsapp or messenger",
    "kind": "text, button, image, audio, video, document, sticker, location, contacts, reaction or unsupported",
    "text": "the text typed, a button's title, a caption or an emoji (None when there is none)",
    "at": "when the user sent it (aware datetime, UTC)",
    "button": "the id/payload of the tapped button, list row, quick reply or postback",
    "button_title": "the title of the tapped button",
    "caption": "the caption of an image, video or document",
    "media_id": "the channel's id of the media (WhatsApp) or sticker (Messenger)",
    "media_url": "the media URL the channel gave, if any",
    "mime_type": "the media's MIME type",
    "filename": "a document's file name",
    "voice": "true for a voice note",
    "latitude": "a shared location's latitude",
    "longitude": "a shared location's longitude",
    "location_name": "a shared location's name",
    "address": "a shared location's address",
    "contacts": "shared contact cards: list of {name, phones, emails}",
    "emoji": "a reaction's emoji ('' when a reaction was removed)",
    "reacted_to": "the id of the message a reaction is about",
    "unsupported_type": "what the channel could not deliver (e.g. edit, poll)",
    "reply_to": "the id of the message this one replies to",
    "forwarded": "true when the user forwarded it",
}


def message_variables(inbound: InboundMessage | None) -> dict[str, Any]:
    """The ``message`` variables for ``inbound`` (every key of MESSAGE_FIELDS; all None when there is none)."""
    values: dict[str, Any] = dict.fromkeys(MESSAGE_FIELDS)
    if inbound is None:
        values["forwarded"] = False
        values["voice"] = False
        return values
    payload = inbound.payload
    values.update(
        id=inbound.provider_message_id,
        channel=inbound.channel,
        kind=inbound.kind,
        text=inbound.text,
        at=inbound.timestamp,
        caption=payload.get("caption"),
        mime_type=payload.get("mime_type"),
        filename=payload.get("filename"),
        media_id=payload.get("media_id"),
        media_url=payload.get("url") if inbound.kind in _MEDIA_KINDS else None,
        voice=bool(payload.get("voice")),
        reply_to=payload.get("reply_to"),
        forwarded=bool(payload.get("forwarded")),
    )
    if inbound.kind == "button":
        values.update(button=payload.get("button"), button_title=payload.get("title"))
    elif inbound.kind == "location":
        values.update(
            latitude=payload.get("latitude"),
            longitude=payload.get("longitude"),
            location_name=payload.get("name"),
            address=payload.get("address"),
        )
    elif inbound.kind == "reaction":
        values.update(emoji=payload.get("emoji", ""), reacted_to=payload.get("message_id"))
    elif inbound.kind == "contacts":
        values["contacts"] = [
            {"name": card.get("name"), "phones": list(card.get("phones", ())), "emails": list(card.get("emails", ()))}
            for card in payload.get("contacts", ())
            if isinstance(card, Mapping)
        ]
    elif inbound.kind == "unsupported":
        values["unsupported_type"] = payload.get("type")
    return values


def mask_phone(phone: str | None) -> str | None:
    """``phone`` with every digit but the last four replaced by "•" ("•••••••4321"); None stays None."""
    if not phone:
        return None
    digits = [char for char in phone if char.isdigit()]
    if len(digits) <= 4:
        return MASK * len(digits)
    return MASK * (len(digits) - 4) + "".join(digits[-4:])


def _business_hours(spec: str | BusinessHours) -> BusinessHours:
    try:
        return parse_business_hours(spec)
    except InvalidValue as exc:
        raise BotDefinitionError(exc.message, hint=exc.hint) from None


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise BotDefinitionError(
            f"unknown timezone {name!r}", hint="use an IANA name such as Europe/Berlin or UTC"
        ) from None


def user_variables(user: UserInfo, *, reveal_phone: bool) -> dict[str, Any]:
    """The ``user`` namespace: on WhatsApp ``id`` (the number) and ``phone`` are masked unless ``reveal_phone``."""
    masked = user.channel == "whatsapp" and not reveal_phone
    return {
        "id": mask_phone(user.id) if masked else user.id,
        "name": user.name,
        "phone": mask_phone(user.phone) if masked else user.phone,
        "channel": user.channel,
    }


class UserProvider:
    """``user``: who the bot is talking to. A WhatsApp number is masked (only its last four digits show) unless
    the stage sets ``reveal_phone: true``."""

    name = "user"
    provides: Mapping[str, str] = {
        "id": "the user's id on the channel: the WhatsApp number masked (•••••••4321), the Messenger PSID",
        "name": "the profile name the channel reports (None when unknown)",
        "phone": "the phone number with all but its last 4 digits masked (None on Messenger)",
        "channel": "whatsapp or messenger",
    }

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        return user_variables(context.user, reveal_phone=context.user.reveal_phone)


class ConversationProvider:
    """``conversation``: the conversation's stage, turn count, start and last messages."""

    name = "conversation"
    provides: Mapping[str, str] = {
        "id": "the conversation's id",
        "stage": "the current stage",
        "turn_count": "how many turns the bot has taken",
        "started_at": "when the conversation (or its current session) started",
        "last_messages": "the latest messages, oldest first: list of {direction (in/out), text, at}",
    }

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        conversation = context.conversation
        return {
            "id": conversation.id,
            "stage": conversation.stage,
            "turn_count": conversation.turn_count,
            "started_at": conversation.started_at,
            "last_messages": [dict(message) for message in conversation.last_messages],
        }


class ClockProvider:
    """``clock``: the turn's time in the bot's timezone (from the injected clock, never read here)."""

    name = "clock"
    provides: Mapping[str, str] = {
        "now": "the current time (aware datetime in the bot's timezone)",
        "today": "today's date in the bot's timezone",
        "weekday": "Monday … Sunday",
        "time": "HH:MM, 24-hour",
        "hour": "the hour, 0-23",
        "timezone": "the bot's timezone name",
        "business_hours": "true inside the bot's business hours, false outside, None when none are set",
    }

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        local = context.now.astimezone(_zone(context.timezone))
        hours = context.business_hours
        return {
            "now": local,
            "today": local.date(),
            "weekday": WEEKDAYS[local.weekday()],
            "time": local.strftime("%H:%M"),
            "hour": local.hour,
            "timezone": context.timezone,
            "business_hours": _business_hours(hours).is_open(local) if hours else None,
        }


class MessageProvider:
    """``message``: the inbound message being answered (see MESSAGE_FIELDS)."""

    name = "message"
    provides: Mapping[str, str] = MESSAGE_FIELDS

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        return {**dict.fromkeys(MESSAGE_FIELDS), **context.message}


BUILTIN_PROVIDERS = (UserProvider(), ConversationProvider(), ClockProvider(), MessageProvider())
BUILTIN_NAMES = frozenset(provider.name for provider in BUILTIN_PROVIDERS)


def builtin_variables(context: ProviderContext) -> dict[str, Any]:
    """What provider URLs, keys and params are rendered with: the static variables, the built-in namespaces and
    ``state`` (the conversation's memory, see ``ProviderContext.state``).

    Unlike templates, provider inputs see ``user.id`` and ``user.phone`` in full: they go to the bot's own
    systems (an order API looks the customer up by number), never to the AI.
    Raises BotDefinitionError for a bad timezone or business-hours spec in the context.
    """
    variables: dict[str, Any] = dict(context.static)
    for provider in BUILTIN_PROVIDERS:
        variables[provider.name] = Namespace(provider.name, provider.fetch(context))
    variables["user"] = Namespace("user", user_variables(context.user, reveal_phone=True))
    variables["state"] = Namespace("state", context.state)
    return variables
