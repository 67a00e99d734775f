"""``GET|POST /webhooks/<channel>``: Meta's subscription check and signed webhook deliveries.

A POST is acknowledged (200) only after its events are committed; when the database is unavailable the answer
is 503 and Meta retries for up to 7 days. Verification, parsing and storage are library calls; this module only
adapts Flask requests to them. On SQLite concurrent webhooks are committed together (:mod:`chatops.db.group_commit`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from flask import Blueprint, Flask, Response, current_app, request

from chatops.channels import parse_webhook, verify_signature, verify_subscription
from chatops.channels.events import CHANNELS, Channel, ChannelNotice, Event, InboundMessage
from chatops.config.settings import ChannelCredentials, channel_credentials
from chatops.db.ingest import StoreResult
from chatops.errors import WebhookError
from chatops.web.state import WebState

log = logging.getLogger(__name__)
webhooks = Blueprint("webhooks", __name__)
EXTENSION = "chatops.webhooks"


class Store(Protocol):
    """The durable write of one webhook's events: returns after they are committed, or raises StorageError."""

    def __call__(self, events: Iterable[Event], *, now: datetime, debounce: float = 0.0) -> StoreResult: ...


@dataclass(frozen=True)
class WebhookRoutes:
    """What the routes need, resolved once by :func:`init_app` instead of on every request."""

    state: WebState
    channels: dict[str, tuple[Channel, ChannelCredentials]]  # by URL name
    store: Store


def init_app(app: Flask, state: WebState, *, store: Store) -> None:
    """Register the webhook routes on ``app``, storing webhooks' events with ``store``."""
    channels: dict[str, tuple[Channel, ChannelCredentials]] = {
        channel: (channel, channel_credentials(state.settings, channel)) for channel in CHANNELS
    }
    app.extensions[EXTENSION] = WebhookRoutes(state, channels, store)
    app.register_blueprint(webhooks)


def _routes() -> WebhookRoutes:
    routes = current_app.extensions[EXTENSION]
    assert isinstance(routes, WebhookRoutes)
    return routes


def _enabled(routes: WebhookRoutes, name: str) -> tuple[Channel, ChannelCredentials]:
    known = routes.channels.get(name)
    if known is None:
        raise WebhookError(f"unknown channel {name!r}; expected one of {', '.join(CHANNELS)}", status=404)
    channel, credentials = known
    if not credentials.enabled:
        raise WebhookError(
            f"the {name} channel is not configured",
            status=404,
            hint=f"set {', '.join(credentials.variables)}",
        )
    return channel, credentials


@webhooks.get("/webhooks/<name>")
def subscribe(name: str) -> Response:
    """Answer Meta's verification request with ``hub.challenge`` as plain text, or 403."""
    _, credentials = _enabled(_routes(), name)
    challenge = verify_subscription(request.args, credentials.verify_token or "")
    return Response(challenge, status=200, mimetype="text/plain")


@webhooks.post("/webhooks/<name>")
def receive(name: str) -> Response:
    """Verify the signature over the raw bytes, parse every entry, store everything in one transaction, 200."""
    routes = _routes()
    channel, credentials = _enabled(routes, name)
    state = routes.state
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    if not state.insecure_skip_signature:
        verify_signature(body, request.headers.get("X-Hub-Signature-256"), credentials.app_secret or "")
    events = _accepted(parse_webhook(channel, body), state.settings.whatsapp_phone_number_ids)
    result = routes.store(events, now=state.clock(), debounce=state.settings.debounce_seconds)
    state.metrics.webhook_stored(channel, result)
    return _acknowledgement(result)


def _acknowledgement(result: StoreResult) -> Response:
    # Formatted directly: jsonify (Flask's JSON provider) was ~7% of the request's GIL time under load.
    body = b'{"stored":%d,"duplicates":%d,"statuses":%d}' % (result.inserted, result.duplicates, result.statuses)
    return Response(body, status=200, mimetype="application/json")


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
