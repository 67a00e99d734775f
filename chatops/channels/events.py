"""Channel-neutral events: what a webhook says, and what the bot sends back.

Both channel adapters parse Meta's JSON into these frozen dataclasses, and the sender turns
:class:`OutboundMessage` back into Graph API request bodies. Nothing outside ``channels/`` looks at Meta's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Channel = Literal["whatsapp", "messenger"]
CHANNELS: tuple[Channel, ...] = ("whatsapp", "messenger")

# Inbound kinds. ``button`` covers WhatsApp reply buttons, list replies and template quick replies, and
# Messenger quick replies and postbacks: ``payload["button"]`` is the id/payload a stage condition matches.
InboundKind = Literal[
    "text",
    "button",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "reaction",
    "unsupported",
]

DeliveryStatus = Literal["sent", "delivered", "read", "played", "failed"]

# The longest values the database holds (the columns of chatops.db.tables; a test keeps them equal). The parsers
# skip an item whose id is longer, as malformed, and clip a longer user name: real ones are far shorter.
ACCOUNT_ID_LIMIT = 64  # phone_number_id, Page id
USER_ID_LIMIT = 64  # wa_id, business-scoped user id, PSID
MESSAGE_ID_LIMIT = 256  # wamid, mid
USER_NAME_LIMIT = 256


@dataclass(frozen=True)
class InboundMessage:
    """One message from a user.

    ``account_id`` is the business side (WhatsApp phone_number_id, Messenger page id), ``user_id`` the user
    (wa_id, PSID). ``payload`` holds the kind-specific normalised fields (see docs/events.md), ``raw`` the
    provider's own JSON object for this message, kept for audit and replay.
    """

    channel: Channel
    account_id: str
    user_id: str
    provider_message_id: str
    kind: InboundKind
    timestamp: datetime
    text: str | None = None
    user_name: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusUpdate:
    """A delivery report for a message the bot sent.

    WhatsApp reports each message id; Messenger reports ``delivered`` with a list of mids, or ``read`` with a
    ``watermark`` (every message sent before it was read), in which case ``provider_message_id`` is ``None``.
    """

    channel: Channel
    account_id: str
    user_id: str
    status: DeliveryStatus
    timestamp: datetime
    provider_message_id: str | None = None
    watermark: datetime | None = None
    error_code: int | None = None
    error_title: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    error_details: str | None = None  # WhatsApp ``errors[].error_data.details``: the why, for operators


@dataclass(frozen=True)
class ChannelNotice:
    """A system-level error Meta reports outside any message (WhatsApp ``value.errors``). Logged, not stored."""

    channel: Channel
    account_id: str
    code: int | None
    title: str
    details: str | None = None


Event = InboundMessage | StatusUpdate | ChannelNotice


@dataclass(frozen=True)
class Button:
    """A reply button, list row or quick reply: ``id`` comes back as the payload, ``title`` is shown."""

    id: str
    title: str
    description: str | None = None


@dataclass(frozen=True)
class OutboundMessage:
    """One message the bot sends.

    ``kind`` ``text`` sends ``text`` with optional ``buttons`` (WhatsApp: reply buttons up to 3, a list up to 10
    rows; Messenger: quick replies up to 13). ``template`` sends an approved WhatsApp template (``template_name``,
    ``template_language``, ``template_params``), used outside the 24-hour customer-service window.
    ``window_params`` are that template's parameters rendered for this reply, sent in its place when the window
    has closed by the time it is sent (None: the bot has no such parameters, or they failed to render).
    """

    text: str = ""
    kind: Literal["text", "template"] = "text"
    buttons: tuple[Button, ...] = ()
    list_button: str | None = None
    template_name: str | None = None
    template_language: str = "en_US"
    template_params: tuple[str, ...] = ()
    reply_to: str | None = None
    window_params: tuple[str, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        """The normalised body stored in ``outbound_messages.body``."""
        body: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.buttons:
            body["buttons"] = [
                {"id": b.id, "title": b.title, **({"description": b.description} if b.description else {})}
                for b in self.buttons
            ]
        if self.list_button:
            body["list_button"] = self.list_button
        if self.kind == "template":
            body["template"] = {
                "name": self.template_name,
                "language": self.template_language,
                "params": list(self.template_params),
            }
        if self.reply_to:
            body["reply_to"] = self.reply_to
        if self.window_params is not None:
            body["window_params"] = list(self.window_params)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> OutboundMessage:
        """Inverse of :meth:`to_json`."""
        template = body.get("template") or {}
        return cls(
            text=body.get("text", ""),
            kind=body.get("kind", "text"),
            buttons=tuple(Button(b["id"], b["title"], b.get("description")) for b in body.get("buttons", ())),
            list_button=body.get("list_button"),
            template_name=template.get("name"),
            template_language=template.get("language", "en_US"),
            template_params=tuple(template.get("params", ())),
            reply_to=body.get("reply_to"),
            window_params=None if body.get("window_params") is None else tuple(body["window_params"]),
        )
