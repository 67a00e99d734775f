"""The counters and histograms chatops records, in one :class:`Metrics` per process (no module globals).

Web requests, workers and the sender record into it; ``/metrics`` (chatops.web.metrics) and ``chatops worker``'s
listener export it. Under ``chatops serve --server gunicorn`` prometheus_client's multiprocess mode is on
(chatops.metrics.multiprocess): every process writes its figures to files in one directory, and the registry a
web process exports (:attr:`Metrics.exported`) reads them all, so any web process answers for the whole server.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from chatops.metrics.multiprocess import multiprocess_dir

if TYPE_CHECKING:
    from chatops.ai.protocol import Usage
    from chatops.db.inbox import StoreResult


class Metrics:
    """The counters chatops exports; workers and the sender in the same process record into them too.

    ``registry`` holds this process's metrics; ``exported`` is what its ``/metrics`` serves: the same registry, or,
    in multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set, as prometheus_client decides it), the sum of every
    process's files. Collectors that compute their figures at scrape time go in with :meth:`add_collector`.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir is None:
            self.exported = self.registry
        else:
            # This registry's own metrics are in the files too: exporting both would count this process twice.
            self.exported = CollectorRegistry()
            MultiProcessCollector(self.exported, path=str(self.multiprocess_dir))  # type: ignore[no-untyped-call]
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

    def add_collector(self, collector: Collector) -> None:
        """Export ``collector`` (figures computed at scrape time: queue depths, pool use) beside the counters."""
        self.exported.register(collector)

    def turn_done(self, outcome: str, seconds: float) -> None:
        """Count one turn that ended with ``outcome`` (ok, error, retried) after ``seconds`` (0: not timed)."""
        self.turns.labels(outcome).inc()
        if seconds:
            self.turn_seconds.observe(seconds)

    def recovered(self, work: str, how: str, count: int) -> None:
        """Count ``count`` leases on ``work`` (turn, send) taken back ``how`` (restart, expired)."""
        self.leases_recovered.labels(work, how).inc(count)

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
