"""CPU time spent by processes over a load run: the server's own process, and the PostgreSQL backends serving it.

Requests per second move with whatever else the (shared) machine is doing; CPU time per acknowledged request
barely does, so it is the figure the webhook benchmark sets its target on. Read from ``/proc/<pid>/stat``
(``utime + stime``, every thread of the process, in clock ticks of 10 ms): psutil is not a dependency, and a
run of a few seconds gives hundreds of ticks per process.

PostgreSQL backends are found through ``pg_stat_activity`` (the connections to one database with one
``application_name``), so only the work done for that database counts, not the other clients of a shared
server. Their /proc entries must be readable: the server must run on this machine, as it does for the
benchmark (127.0.0.1). The server's background processes (WAL writer, checkpointer) serve every database at
once and are left out.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

import sqlalchemy as sa

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (all its threads); ``None`` when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may contain spaces: fields are counted after the last ')'.
    fields = text[text.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15: utime, stime


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants now (a server that runs its web processes as children: Gunicorn, granian)."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry.name)] = int(text[text.rindex(b")") + 2 :].split()[1])  # field 4: the parent's pid
    tree = [pid]
    for member in tree:  # grows while walked: children, then theirs
        tree.extend(child for child, parent in parents.items() if parent == member)
    return tree


def cpu_snapshot(pids: Iterable[int]) -> dict[int, float]:
    """CPU seconds per pid, leaving out pids that are gone."""
    seconds = {}
    for pid in pids:
        value = process_cpu_seconds(pid)
        if value is not None:
            seconds[pid] = value
    return seconds


def cpu_between(before: Mapping[int, float], after: Mapping[int, float]) -> float:
    """CPU seconds used between two snapshots: a pid that appeared in between counts from zero.

    A pid that ended in between is not counted (its last ticks are lost): the server's pooled connections
    live for the whole run, so this only drops short-lived connections, which the benchmark does not make.
    """
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


class PostgresBackends:
    """The backends of PostgreSQL ``server`` connected to ``database`` as ``application_name``.

    ``snapshot()`` returns their CPU seconds per pid; ``None`` when their /proc entries cannot be read (a server
    on another machine or in a container), which the caller reports as "not measured".
    """

    def __init__(self, server: str, database: str, *, application_name: str = "chatops") -> None:
        from bench.databases import admin_engine

        self._engine = admin_engine(server)
        self._database = database
        self._application_name = application_name

    def pids(self) -> list[int]:
        """The pids of the matching backends now."""
        query = sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = :database AND application_name = :application"
            " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        with self._engine.connect() as connection:
            rows = connection.execute(query, {"database": self._database, "application": self._application_name})
            return [int(pid) for pid in rows.scalars()]

    def snapshot(self) -> dict[int, float] | None:
        pids = self.pids()
        seconds = cpu_snapshot(pids)
        if pids and not seconds:
            return None
        return seconds

    def close(self) -> None:
        self._engine.dispose()
