"""What chatops counts, and how several processes add up (see docs/operations.md#metrics).

- :mod:`chatops.metrics.registry`: :class:`Metrics`, the counters and histograms of one process;
- :mod:`chatops.metrics.pool`: the connection pool gauges;
- :mod:`chatops.metrics.multiprocess`: prometheus_client's multiprocess mode, for ``serve --server gunicorn``.

Imports nothing of chatops but its own modules: the web app, the background process and ``chatops worker`` all
record into it. ``chatops.web.metrics`` serves it over HTTP.
"""

from chatops.metrics.registry import Metrics

__all__ = ["Metrics"]
