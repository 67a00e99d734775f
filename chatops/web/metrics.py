"""Prometheus metrics, one registry per app (no process globals), served at ``GET /metrics``.

Who may read them (the counters tell traffic, error rates and which channels run): with
``CHATOPS_METRICS_TOKEN`` set, a request that sends ``Authorization: Bearer <token>``; without it, only a client
on the same host (loopback) that did not come through a proxy (no ``X-Forwarded-For``/``Forwarded`` header).
Anyone else gets 401/403 in the JSON error shape.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Request, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from chatops.channels.events import CHANNELS
from chatops.web.errors import error_response
from chatops.web.state import web_state

if TYPE_CHECKING:
    from chatops.ai.protocol import Usage
    from chatops.db.inbox import StoreResult

metrics = Blueprint("metrics", __name__)


class Metrics:
    """The counters chatops exports; workers and the sender in the same process record into them too."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.webhook_events = Counter(
            "chatops_webhook_events",
            "Webhook events stored, by channel and outcome (inserted, duplicate, status).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self._webhook_children: dict[tuple[str, str], Counter] = {}
        self._ack_children: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.webhook_batches = Histogram(
            "chatops_webhook_batch_deliveries",
            "Webhooks written together in one transaction (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=self.registry,
        )
        self.turns = Counter(
            "chatops_turns", "Conversation turns, by outcome (ok, error, retried).", ["outcome"], registry=self.registry
        )
        self.turn_seconds = Histogram(
            "chatops_turn_seconds",
            "Time to handle one turn, AI included.",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
            registry=self.registry,
        )
        self.leases_recovered = Counter(
            "chatops_leases_recovered",
            "Leases taken back from a process that stopped: work (turn, send) and how (restart: the same instance "
            "started again; expired: not renewed for CHATOPS_LEASE_SECONDS).",
            ["work", "how"],
            registry=self.registry,
        )
        for work in ("turn", "send"):
            for how in ("restart", "expired"):
                self.leases_recovered.labels(work, how)  # present at 0 from the start, so rate() sees the first one
        self.sends = Counter(
            "chatops_outbound_messages",
            "Outbound messages the sender finished with, by channel, outcome (sent; retry: a transient error, sent "
            "again later; failed: given up; paused: the token was refused, code 190) and Graph error code ('' when "
            "the error had none).",
            ["channel", "outcome", "error_code"],
            registry=self.registry,
        )
        self.webhook_requests = Counter(
            "chatops_webhook_requests",
            "Webhook POSTs answered, by channel and HTTP status (200: acknowledged; 4xx: refused; 503: no database).",
            ["channel", "status"],
            registry=self.registry,
        )
        self.webhook_ack_seconds = Histogram(
            "chatops_webhook_ack_seconds",
            "Time from a webhook POST reaching chatops to its answer being ready (stored and committed on 200).",
            ["channel"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.ai_seconds = Histogram(
            "chatops_ai_request_seconds",
            "Time of one AI call (retries included), by call (reply, classify, extract), failed ones too.",
            ["call"],
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60),
            registry=self.registry,
        )
        self.ai_tokens = Counter(
            "chatops_ai_tokens",
            "Tokens the model server reported, by call and kind (prompt, completion).",
            ["call", "kind"],
            registry=self.registry,
        )
        self.ai_errors = Counter(
            "chatops_ai_errors",
            "AI calls that failed after their retries, by call and error type.",
            ["call", "error"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "chatops_rate_limited",
            "Refused by a rate limit, by limit: api_key (admin API requests over CHATOPS_API_RATE_LIMIT), bad_key "
            "(requests from an address over CHATOPS_API_BAD_KEY_LIMIT), conversation (inbound messages held back "
            "by stages.yaml bot.rate_limit).",
            ["limit"],
            registry=self.registry,
        )
        for limit in ("api_key", "bad_key", "conversation"):
            self.rate_limited.labels(limit)

    def sent(self, channel: str, outcome: str, error_code: int | None = None) -> None:
        """Count one outbound message the sender finished with (see ``chatops_outbound_messages``)."""
        self.sends.labels(channel, outcome, "" if error_code is None else str(error_code)).inc()

    def ai_call(self, call: str, seconds: float, usage: Usage | None, error: str | None) -> None:
        """Count one AI call: its time, its tokens (``usage``) or its failure (``error``: the exception's type)."""
        self.ai_seconds.labels(call).observe(seconds)
        if usage is not None:
            self.ai_tokens.labels(call, "prompt").inc(usage.prompt_tokens)
            self.ai_tokens.labels(call, "completion").inc(usage.completion_tokens)
        if error is not None:
            self.ai_errors.labels(call, error).inc()

    def limited(self, limit: str, count: int = 1) -> None:
        """Count ``count`` requests or messages refused by the rate limit ``limit``."""
        self.rate_limited.labels(limit).inc(count)

    def webhook_answered(self, channel: str, status: int, seconds: float) -> None:
        """Count one webhook POST answered with ``status`` after ``seconds``."""
        key = (channel, status)
        children = self._ack_children.get(key)
        if children is None:  # cached like _webhook_events: this runs on every acknowledgement
            children = self._ack_children[key] = (
                self.webhook_requests.labels(channel, str(status)),
                self.webhook_ack_seconds.labels(channel),
            )
        children[0].inc()
        children[1].observe(seconds)

    def webhook_stored(self, channel: str, result: StoreResult) -> None:
        """Count what one webhook stored."""
        for outcome, count in (
            ("inserted", result.inserted),
            ("duplicate", result.duplicates),
            ("status", result.statuses),
        ):
            if count:
                self._webhook_events(channel, outcome).inc(count)

    def _webhook_events(self, channel: str, outcome: str) -> Counter:
        # labels() takes a lock and builds the key on every call; each webhook needs one or two of a few children.
        child = self._webhook_children.get((channel, outcome))
        if child is None:
            child = self._webhook_children[(channel, outcome)] = self.webhook_events.labels(channel, outcome)
        return child

    def webhook_batch(self, deliveries: int) -> None:
        """Count one group-commit write of ``deliveries`` webhooks."""
        self.webhook_batches.observe(deliveries)


@metrics.get("/metrics")
def export() -> Response | tuple[Response, int]:
    """The Prometheus text exposition format, to the readers :func:`refusal` lets through."""
    state = web_state(current_app)
    token = state.settings.metrics_token
    refused = refusal(request, token.get_secret_value() if token is not None else None)
    if refused is not None:
        response, status = error_response(*refused)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="chatops metrics"'
        return response, status
    # content_type, not mimetype: Flask appends "; charset=utf-8" to a mimetype, and this one already has it.
    return Response(generate_latest(state.metrics.registry), content_type=CONTENT_TYPE_LATEST)


def refusal(req: Request, token: str | None) -> tuple[int, str, str] | None:
    """None when ``req`` may read the metrics, else (status, code, message) for the error answer."""
    if token:
        given = req.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return None
        return 401, "unauthorized", "/metrics needs Authorization: Bearer <CHATOPS_METRICS_TOKEN>"
    if _loopback(req.remote_addr) and not ("X-Forwarded-For" in req.headers or "Forwarded" in req.headers):
        return None
    return 403, "forbidden", "/metrics answers only on this host; set CHATOPS_METRICS_TOKEN to scrape it remotely"


def _loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:  # a Unix socket, or a server that reports no address
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1 on a :: socket
    return (mapped or ip).is_loopback


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_WEBHOOKS = "/webhooks/"


class WebhookTimer:
    """WSGI middleware: counts every webhook POST by channel and status and times it until its answer is ready.

    Outside the webhook code (which answers a stored webhook without Flask, see
    :class:`chatops.web.webhooks.WebhookFront`), so both of its paths and every refusal are counted alike. An
    unknown channel name in the path is counted as ``other`` (the label stays bounded).
    """

    def __init__(self, app: WSGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(_WEBHOOKS):
            return self.app(environ, start_response)
        name = path[len(_WEBHOOKS) :]
        channel = name if name in CHANNELS else "other"
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, recording_start_response)
        finally:
            self.metrics.webhook_answered(channel, status, time.perf_counter() - started)
