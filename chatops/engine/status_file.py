"""What a background process (workers + sender) tells the web processes beside it: a small JSON status file.

Under Gunicorn the workers and the sender run in one process of their own, next to the web processes, so
``/readyz`` in a web process cannot ask them directly. The background process rewrites the file every
:data:`WRITE_SECONDS` (atomically: a temporary file renamed over it); a web process reads it per ``/readyz``.
A file older than :data:`STALE_SECONDS`, or none at all, is itself a problem: the process is gone or stuck.
Each write names its writer's pid: while a reload replaces the background process, the Gunicorn master writes the
file until the new process has reported (chatops.web.gunicorn_server).

Writes the file (``write_status``); reads raise nothing (a missing or torn file is reported as a problem).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

WRITE_SECONDS = 0.5
STALE_SECONDS = 3.0


def write_status(path: Path, *, problems: list[str], warnings: list[str]) -> None:
    """Replace ``path`` with the current problems and warnings, stamped now (wall clock: another process reads)
    and with this process' pid."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    status = {"time": time.time(), "pid": os.getpid(), "problems": problems, "warnings": warnings}
    temporary.write_text(json.dumps(status))
    temporary.replace(path)


def last_words(path: Path, pid: int) -> list[str]:
    """The problems process ``pid`` wrote last in ``path`` (what a background process that refused to start said
    on its way out); empty when another process wrote it since, or nothing is readable."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(status, dict) or status.get("pid") != pid:
        return []
    return [str(problem) for problem in status.get("problems", [])]


def writer(path: Path) -> int | None:
    """The pid of the process that wrote ``path`` last; None when there is no readable file."""
    try:
        pid = json.loads(path.read_text()).get("pid")
    except (OSError, ValueError, AttributeError):
        return None
    return pid if isinstance(pid, int) else None


class StatusReader:
    """Reads a status file for ``/readyz``: :meth:`problems` and :meth:`warnings` as ``WebState`` checks want."""

    def __init__(self, path: Path, *, what: str = "the background process (workers and sender)") -> None:
        self.path = path
        self.what = what

    def _read(self) -> tuple[dict[str, list[str]], str | None]:
        try:
            status = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}, f"{self.what} is not running (no status yet)"
        age = time.time() - float(status.get("time", 0))
        if age > STALE_SECONDS:
            return status, f"{self.what} has not reported for {age:.0f}s (stopped or stuck?)"
        return status, None

    def problems(self) -> list[str]:
        status, problem = self._read()
        return [problem] if problem else [str(item) for item in status.get("problems", [])]

    def warnings(self) -> list[str]:
        status, problem = self._read()
        return [] if problem else [str(item) for item in status.get("warnings", [])]
