"""prometheus_client's multiprocess mode, as ``chatops serve --server gunicorn`` uses it.

With ``PROMETHEUS_MULTIPROC_DIR`` set, every metric value lives in a memory-mapped file of its process
(``counter_<pid>.db`` …) in that directory, and a :class:`~prometheus_client.multiprocess.MultiProcessCollector`
sums the files of every process, dead ones included: a web process that Gunicorn replaces (a crash, a SIGHUP reload)
leaves its counts behind, so totals neither reset nor count twice. Gauges of the ``live*`` kinds (the pool gauges)
must leave with their process: :func:`process_ended` removes its files (Gunicorn's master calls it for each web
process it reaps; under Granian, whose master says nothing of the processes it reaps, the master calls
:func:`forget_exited_processes` every half second).

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


def forget_exited_processes() -> list[int]:
    """Forget the ``live*`` gauges of every process that has left files in the directory and is gone; their pids.

    For a master that is not told when a child exits (Granian's). A pid is gone when no process has it, or only a
    zombie (Granian reaps its web processes at once, so a zombie is one that has just exited).
    """
    path = multiprocess_dir()
    if path is None:
        return []
    gone = set()
    for name in path.glob("gauge_live*_*.db"):
        pid = int(name.stem.rsplit("_", 1)[1])
        if pid not in gone and not _running(pid):
            gone.add(pid)
    for pid in gone:
        process_ended(pid)
    return sorted(gone)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: not one of ours, and running
        return True
    try:
        return Path(f"/proc/{pid}/status").read_text().find("zombie") < 0
    except OSError:  # no /proc (macOS): kill(pid, 0) answered
        return True
