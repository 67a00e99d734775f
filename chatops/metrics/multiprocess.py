"""prometheus_client's multiprocess mode, as ``chatops serve --server gunicorn`` uses it.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every metric value lives in a memory-mapped file of its process
(``counter_<pid>.db`` …) in that directory, and a :class:`~prometheus_client.multiprocess.MultiProcessCollector`
sums the files of every process, dead ones included: a web process that Gunicorn replaces (a crash, a SIGHUP reload)
leaves its counts behind, so totals neither reset nor count twice. Gauges of the ``live*`` kinds (the pool gauges)
must leave with their process: :func:`process_ended` removes its files.

The master sets the directory up with :func:`use_multiprocess_dir` before it forks a web process or starts the
background process: the children inherit the variable (prometheus_client chooses its value class when it is
imported, and from the environment).
"""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client import multiprocess, values

ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> Path | None:
    """The directory this process records its metrics in, or None (one process, values in memory)."""
    value = os.environ.get(ENV)
    return Path(value) if value else None


def use_multiprocess_dir(path: Path) -> None:
    """Record metrics in ``path`` (which must exist and start empty) in this process and every later child.

    Call it before the first metric is made: values made before keep living in memory only.
    """
    os.environ[ENV] = str(path)
    # prometheus_client reads the variable once, when it is first imported, which may have happened already.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]  # unannotated upstream


def process_ended(pid: int) -> None:
    """Forget the ``live*`` gauges of the process ``pid``, which has exited (no-op outside multiprocess mode)."""
    path = multiprocess_dir()
    if path is not None:
        multiprocess.mark_process_dead(pid, str(path))  # type: ignore[no-untyped-call]  # unannotated upstream
