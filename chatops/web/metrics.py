"""Prometheus metrics, one registry per app (no process globals), served at ``GET /metrics``.

Who may read them (the counters tell traffic, error rates and which channels run): with
``CHATOPS_METRICS_TOKEN`` set, a request that sends ``Authorization: Bearer <token>``; without it, only a client
on the same host (loopback) that did not come through a proxy (no ``X-Forwarded-For``/``Forwarded`` header).
Anyone else gets 401/403 in the JSON error shape.
"""

from __future__ import annotations

import hmac
import ipaddress
from typing import TYPE_CHECKING

from flask import Blueprint, Request, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from chatops.web.errors import error_response
from chatops.web.state import web_state

if TYPE_CHECKING:
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
            "Graph API sends, by channel and outcome.",
            ["channel", "outcome"],
            registry=self.registry,
        )

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
