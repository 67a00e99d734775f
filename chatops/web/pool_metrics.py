"""Connection pool gauges on ``/metrics``: how many connections the process's pool holds and lends out now.

Read from SQLAlchemy's pool at every scrape (no query, no lock of ours). Only a ``QueuePool`` (what
:func:`chatops.db.connect.create_db_engine` makes for PostgreSQL and SQLite files) has these figures; another pool
exports nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class PoolCollector(Collector):
    """``chatops_db_pool_size`` (connections kept open at most, overflow excluded), ``chatops_db_pool_max``
    (size plus overflow: the most this process opens) and ``chatops_db_pool_checked_out`` (in use now)."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = self._engine.pool
        if not isinstance(pool, sa.pool.QueuePool):
            return
        size = pool.size()
        yield GaugeMetricFamily(
            "chatops_db_pool_size", "Connections the pool keeps open at most (overflow excluded).", value=size
        )
        overflow = pool._max_overflow  # SQLAlchemy has no accessor for it; -1: unbounded
        if overflow >= 0:
            yield GaugeMetricFamily(
                "chatops_db_pool_max",
                "Connections this process may open at most (pool size plus overflow): its share of max_connections.",
                value=size + overflow,
            )
        yield GaugeMetricFamily(
            "chatops_db_pool_checked_out",
            "Connections lent out now (a request or thread uses them).",
            value=pool.checkedout(),
        )
