"""``GET|POST /webhooks/<channel>``: Meta's subscription check and signed webhook deliveries.

A POST is acknowledged (200) only after its events are committed; when the database is unavailable the answer
is 503 and Meta retries for up to 7 days. Verification, parsing and storage are library calls; this module only
adapts Flask requests to them.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from chatops.channels import parse_webhook, verify_signature, verify_subscription
from chatops.channels.events import CHANNELS, Channel, ChannelNotice, Event, InboundMessage
from chatops.config.settings import ChannelCredentials, channel_credentials
from chatops.db.inbox import store_events
from chatops.errors import WebhookError
from chatops.web.state import web_state

log = logging.getLogger(__name__)
webhooks = Blueprint("webhooks", __name__)


def _enabled(name: str) -> tuple[Channel, ChannelCredentials]:
    if name not in CHANNELS:
        raise WebhookError(f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}", status=404)
    channel: Channel = name  # checked against CHANNELS just above
    credentials = channel_credentials(web_state(current_app).settings, channel)
    if not credentials.enabled:
        raise WebhookError(
            f"the {channel} channel is not configured",
            status=404,
            hint=f"set {', '.join(credentials.variables)}",
        )
    return channel, credentials


@webhooks.get("/webhooks/<name>")
def subscribe(name: str) -> Response:
    """Answer Meta's verification request with ``hub.challenge`` as plain text, or 403."""
    _, credentials = _enabled(name)
    challenge = verify_subscription(request.args, credentials.verify_token or "")
    return Response(challenge, status=200, mimetype="text/plain")


@webhooks.post("/webhooks/<name>")
def receive(name: str) -> tuple[Response, int]:
    """Verify the signature over the raw bytes, parse every entry, store everything in one transaction, 200."""
    channel, credentials = _enabled(name)
    state = web_state(current_app)
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not state.insecure_skip_signature:
        verify_signature(body, request.headers.get("X-Hub-Signature-256"), credentials.app_secret or "")
    events = _accepted(parse_webhook(channel, body), state.settings.whatsapp_phone_number_ids)
    result = store_events(state.db, events, now=state.clock(), debounce=state.settings.debounce_seconds)
    state.metrics.webhook_stored(channel, result)
    return jsonify({"stored": result.inserted, "duplicates": result.duplicates, "statuses": result.statuses}), 200


def _accepted(events: list[Event], allowed_accounts: list[str]) -> list[Event]:
    """Drop events for accounts outside the allow-list and log system notices (they are not stored)."""
    kept: list[Event] = []
    for event in events:
        if isinstance(event, ChannelNotice):
            log.warning("%s notice for %s: %s %s", event.channel, event.account_id, event.code, event.title)
        elif allowed_accounts and event.channel == "whatsapp" and event.account_id not in allowed_accounts:
            kind = "message" if isinstance(event, InboundMessage) else "status"
            log.info("ignored a %s for phone_number_id %s (not in the allow-list)", kind, event.account_id)
        else:
            kept.append(event)
    return kept
