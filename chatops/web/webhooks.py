"""``GET|POST /webhooks/<channel>``: Meta's subscription check and signed webhook deliveries.

A POST is acknowledged (200) only after its events are committed; when the database is unavailable the answer
is 503 and Meta retries for up to 7 days. A webhook the database refuses (a value it cannot hold) is a 400 with
the reason: retrying cannot help, and nothing of it is stored. Verification, parsing and storage are library
calls; this module only adapts requests to them. Concurrent webhooks are committed together
(:mod:`chatops.db.group_commit`).

``POST /webhooks/<channel>`` is the one route under load (three status webhooks come for every message sent), so
its successful path skips Flask: :class:`WebhookFront` sits in front of the Flask app, reads the body, calls
:func:`acknowledge` (the same function the Flask route calls) and answers 200 itself. Everything else goes to
Flask unchanged, and so does every webhook that fails: the front hands it over with its body and the exception,
and the Flask route raises it again, so error answers and logs come from the app's one set of error handlers.
Flask's request context, routing and response objects were a third of the request's interpreter time (issue 14).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from flask import Blueprint, Flask, Response, current_app, request

from chatops.channels import parse_webhook, verify_signature, verify_subscription
from chatops.channels.events import CHANNELS, Channel, ChannelNotice, Event, InboundMessage
from chatops.config.settings import ChannelCredentials, channel_credentials
from chatops.db.ingest import StoreResult
from chatops.errors import UnstorableError, WebhookError
from chatops.web.state import WebState

log = logging.getLogger(__name__)
webhooks = Blueprint("webhooks", __name__)
EXTENSION = "chatops.webhooks"


class Store(Protocol):
    """The durable write of one webhook's events: returns after they are committed, or raises StorageError
    (the database is unavailable) or UnstorableError (it refused a value)."""

    def __call__(self, events: Iterable[Event], *, now: datetime, debounce: float = 0.0) -> StoreResult: ...


@dataclass(frozen=True)
class WebhookRoutes:
    """What the routes need, resolved once by :func:`init_app` instead of on every request."""

    state: WebState
    channels: dict[str, tuple[Channel, ChannelCredentials]]  # by URL name
    store: Store


def init_app(app: Flask, state: WebState, *, store: Store) -> None:
    """Register the webhook routes on ``app``, storing webhooks' events with ``store``, and put
    :class:`WebhookFront` in front of ``app.wsgi_app``."""
    channels: dict[str, tuple[Channel, ChannelCredentials]] = {
        channel: (channel, channel_credentials(state.settings, channel)) for channel in CHANNELS
    }
    routes = WebhookRoutes(state, channels, store)
    app.extensions[EXTENSION] = routes
    app.register_blueprint(webhooks)
    app.wsgi_app = WebhookFront(app.wsgi_app, routes, max_body=app.config["MAX_CONTENT_LENGTH"])  # type: ignore[method-assign]


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
    failed = request.environ.pop(FRONT_ERROR, None)
    if failed is not None:
        raise failed  # WebhookFront ran this request and it failed: the error handlers answer
    routes = _routes()
    _enabled(routes, name)  # 404 for a channel that is off, before the body is read
    body = request.get_data(cache=False)  # raises 413 past MAX_CONTENT_LENGTH
    return Response(acknowledge(routes, name, body, request.headers.get("X-Hub-Signature-256")), mimetype=JSON)


def acknowledge(routes: WebhookRoutes, name: str, body: bytes, signature: str | None) -> bytes:
    """The whole webhook: verify ``signature`` over ``body``, parse every entry, store everything in one
    transaction; the acknowledgement's body once it is committed.

    Raises WebhookError (404 channel off, 400 bad body or a value the database refuses), SignatureError
    (401/403), StorageError (database unavailable).
    """
    channel, credentials = _enabled(routes, name)
    state = routes.state
    if not state.insecure_skip_signature:
        verify_signature(body, signature, credentials.app_secret or "")
    events = _accepted(parse_webhook(channel, body), state.settings.whatsapp_phone_number_ids)
    try:
        result = routes.store(events, now=state.clock(), debounce=state.settings.debounce_seconds)
    except UnstorableError as exc:
        log.warning("%s webhook refused by the database: %s", channel, exc.message)
        raise WebhookError(f"cannot store this webhook: {exc.message}", status=400) from None
    state.metrics.webhook_stored(channel, result)
    # Formatted directly: jsonify (Flask's JSON provider) was ~7% of the request's GIL time under load.
    return b'{"stored":%d,"duplicates":%d,"statuses":%d}' % (result.inserted, result.duplicates, result.statuses)


JSON = "application/json"
FRONT_ERROR = "chatops.webhook_front.error"  # the environ key that carries a failed webhook's exception to Flask
_PREFIX = "/webhooks/"

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class WebhookFront:
    """WSGI middleware: a webhook POST to an enabled channel is answered without Flask when it succeeds.

    Hands to ``flask`` (the Flask app's ``wsgi_app``) every other request, a POST without a Content-Length or
    with one past ``max_body`` (Flask answers 411/413), and a webhook that raised (with the body it read and the
    exception under ``FRONT_ERROR``, for :func:`receive` to raise again).
    """

    def __init__(self, flask: WSGIApp, routes: WebhookRoutes, *, max_body: int | None) -> None:
        self.flask = flask
        self.routes = routes
        self.max_body = max_body

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(_PREFIX):
            return self.flask(environ, start_response)
        name = path[len(_PREFIX) :]
        known = self.routes.channels.get(name)
        length = _content_length(environ)
        if (
            known is None
            or not known[1].enabled
            or length is None
            or (self.max_body is not None and length > self.max_body)
        ):
            return self.flask(environ, start_response)
        body: bytes = environ["wsgi.input"].read(length) if length else b""
        try:
            if len(body) < length:  # the client went away mid-body: Flask answers as it would
                raise _Incomplete
            answer = acknowledge(self.routes, name, body, environ.get("HTTP_X_HUB_SIGNATURE_256"))
        except Exception as exc:  # every failure is answered by Flask's error handlers
            environ["wsgi.input"] = io.BytesIO(body)
            if not isinstance(exc, _Incomplete):
                environ[FRONT_ERROR] = exc
            return self.flask(environ, start_response)
        start_response("200 OK", [("Content-Type", JSON), ("Content-Length", str(len(answer)))])
        return [answer]


class _Incomplete(Exception):
    """Fewer body bytes than Content-Length said."""


def _content_length(environ: dict[str, Any]) -> int | None:
    value = environ.get("CONTENT_LENGTH")
    if not value or environ.get("HTTP_TRANSFER_ENCODING"):
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None


def _accepted(events: list[Event], allowed_accounts: list[str]) -> list[Event]:
    """Drop events for accounts outside the allow-list and log system notices (they are not stored)."""
    kept: list[Event] = []
    for event in events:
        if isinstance(event, ChannelNotice):
            details = f": {event.details}" if event.details else ""
            log.warning(
                "%s notice for %s: %s %s%s", event.channel, event.account_id, event.code, event.title, details[:500]
            )
        elif allowed_accounts and event.channel == "whatsapp" and event.account_id not in allowed_accounts:
            kind = "message" if isinstance(event, InboundMessage) else "status"
            log.info("ignored a %s for phone_number_id %s (not in the allow-list)", kind, event.account_id)
        else:
            kept.append(event)
    return kept
