"""Prometheus metrics, one registry per app (no process globals), served at ``GET /metrics``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Blueprint, Response, current_app
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

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
def export() -> Response:
    """The Prometheus text exposition format."""
    # content_type, not mimetype: Flask appends "; charset=utf-8" to a mimetype, and this one already has it.
    return Response(generate_latest(web_state(current_app).metrics.registry), content_type=CONTENT_TYPE_LATEST)
