"""Queue gauges on ``/metrics``: backlog and age of the oldest due row, per queue and channel.

The figures are read from the database at most every ``max_age`` seconds and shared by every scrape (several
Prometheus servers, or a scrape per web process behind a load balancer, cost one query per interval). When the
database does not answer, the gauges are left out of that scrape (a missing series, not a stale figure).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chatops.db.queue_stats import QueueDepth, queue_depths

log = logging.getLogger(__name__)

DEFAULT_MAX_AGE = 5.0


class QueueCollector(Collector):
    """A Prometheus collector over :func:`~chatops.db.queue_stats.queue_depths`, cached for ``max_age`` seconds."""

    def __init__(
        self,
        engine: sa.Engine,
        *,
        clock: Callable[[], datetime],
        max_age: float = DEFAULT_MAX_AGE,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._max_age = max_age
        self._monotonic = monotonic
        self._lock = threading.Lock()  # one query at a time; concurrent scrapes wait for it and share it
        self._depths: list[QueueDepth] | None = None
        self._taken_at: float | None = None
        self._failing = False

    def depths(self) -> list[QueueDepth] | None:
        """The cached figures, refreshed when older than ``max_age``; ``None`` while the database fails."""
        with self._lock:
            now = self._monotonic()
            if self._taken_at is None or now - self._taken_at >= self._max_age:
                self._taken_at = now
                try:
                    self._depths = queue_depths(self._engine, now=self._clock())
                    self._failing = False
                except sa.exc.SQLAlchemyError as exc:
                    if not self._failing:  # once per outage, not once per scrape
                        log.warning("queue gauges unavailable: %s", type(exc).__name__)
                    self._failing = True
                    self._depths = None
            return self._depths

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depths = self.depths()
        if depths is None:
            return
        backlog = GaugeMetricFamily(
            "chatops_queue_backlog",
            "Rows waiting in a queue (inbound: pending messages; outbound: unsent replies, due or not; sending: "
            "replies whose request is in flight).",
            labels=["queue", "channel"],
        )
        oldest = GaugeMetricFamily(
            "chatops_queue_oldest_due_seconds",
            "How long the oldest due row of a queue has been due (0 when nothing is due); for sending, how long "
            "the oldest reply in flight has been (since its claim).",
            labels=["queue", "channel"],
        )
        seen = {(d.queue, d.channel) for d in depths}
        for queue in ("inbound", "outbound", "sending"):
            for channel in ("whatsapp", "messenger"):
                if (queue, channel) not in seen:  # every series always present, so alerts see a 0, not a gap
                    depths = [*depths, QueueDepth(queue, channel, 0, 0.0)]
        for depth in sorted(depths, key=lambda d: (d.queue, d.channel)):
            backlog.add_metric([depth.queue, depth.channel], depth.backlog)
            oldest.add_metric([depth.queue, depth.channel], depth.oldest_due_seconds)
        yield backlog
        yield oldest
