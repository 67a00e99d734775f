"""Connection pool gauges: how many connections a process's pool holds and lends out now.

One process (waitress, ``chatops worker``): :class:`PoolCollector` reads SQLAlchemy's pool at every scrape (no
query, no lock of ours). Several processes (Gunicorn, multiprocess mode): a scrape runs in one web process and
cannot read the others' pools, so each process keeps its figures in ``livesum`` gauges instead (the checked-out
count follows the pool's checkout and checkin events) and ``/metrics`` shows their sum over the live processes:
the whole server's share of ``max_connections``.

Only a ``QueuePool`` (what :func:`chatops.db.connect.create_db_engine` makes for PostgreSQL and SQLite files) has
these figures; another pool exports nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chatops.metrics.registry import Metrics

SIZE_HELP = "Connections the pool keeps open at most (overflow excluded)."
MAX_HELP = "Connections this process may open at most (pool size plus overflow): its share of max_connections."
CHECKED_OUT_HELP = "Connections lent out now (a request or thread uses them)."


def export_pool(metrics: Metrics, engine: sa.Engine) -> None:
    """Export ``engine``'s pool figures with ``metrics`` (once per process; call it before the engine is used)."""
    pool = engine.pool
    if not isinstance(pool, sa.pool.QueuePool):
        return
    if metrics.multiprocess_dir is None:
        metrics.add_collector(PoolCollector(engine))
        return
    overflow = pool._max_overflow  # SQLAlchemy has no accessor for it; -1: unbounded
    gauges = {
        name: Gauge(name, text, multiprocess_mode="livesum", registry=metrics.registry)
        for name, text in (
            ("chatops_db_pool_size", SIZE_HELP),
            ("chatops_db_pool_max", MAX_HELP),
            ("chatops_db_pool_checked_out", CHECKED_OUT_HELP),
        )
        if name != "chatops_db_pool_max" or overflow >= 0
    }
    gauges["chatops_db_pool_size"].set(pool.size())
    if "chatops_db_pool_max" in gauges:
        gauges["chatops_db_pool_max"].set(pool.size() + overflow)
    checked_out = gauges["chatops_db_pool_checked_out"]
    checked_out.set(pool.checkedout())

    # Listened after create_db_engine's own checkout listener (the ping of idle connections): when that one
    # refuses a dead connection, this one is not called for it, and the pool's retry counts once.
    def checkout(*_: Any) -> None:
        checked_out.inc()

    def checkin(*_: Any) -> None:  # also for a connection invalidated while lent out
        checked_out.dec()

    sa.event.listen(engine, "checkout", checkout)
    sa.event.listen(engine, "checkin", checkin)


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
        yield GaugeMetricFamily("chatops_db_pool_size", SIZE_HELP, value=size)
        overflow = pool._max_overflow
        if overflow >= 0:
            yield GaugeMetricFamily("chatops_db_pool_max", MAX_HELP, value=size + overflow)
        yield GaugeMetricFamily("chatops_db_pool_checked_out", CHECKED_OUT_HELP, value=pool.checkedout())
