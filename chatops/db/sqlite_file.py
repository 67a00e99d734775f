"""The file under a SQLite engine: deleted, replaced or made read-only while chatops runs is an outage.

SQLite keeps its file open. A connection that opened it before it was deleted goes on writing into the deleted
file (gone for good at the last close), and one opened for writing goes on writing after a ``chmod a-w`` (root
ignores permissions altogether). Nothing fails, so without a check webhooks would be acknowledged into a file
that no one will read again, and ``/readyz`` would say ready. So the path itself is checked: it must still name
the file the engine first opened (same device and inode) and have a write permission bit. One ``os.stat``,
about 1 us: the webhook write checks before every commit (:mod:`chatops.db.ingest`), ``/readyz`` on every call.

:func:`watch` is called by :func:`chatops.db.connect.create_db_engine`; engines made otherwise are not checked.
"""

from __future__ import annotations

import os
import stat
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event

from chatops.errors import StorageError


@dataclass
class SQLiteFile:
    """The file of one engine; ``identity`` is (device, inode) of the file its first connection opened."""

    path: str
    identity: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def opened(self) -> None:
        """A connection opened the file: remember which file that is, the first time."""
        if self.identity is not None:
            return
        with self._lock:
            if self.identity is None:
                try:
                    st = os.stat(self.path)
                except OSError:
                    return  # checked (and reported) by problem()
                self.identity = (st.st_dev, st.st_ino)

    def problem(self) -> str | None:
        """Why the engine cannot use its file any more, or ``None`` when it can."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return f"the SQLite file {self.path} was deleted while chatops was running"
        except OSError as exc:
            return f"cannot reach the SQLite file {self.path}: {exc.strerror}"
        if self.identity is not None and (st.st_dev, st.st_ino) != self.identity:
            return f"the SQLite file {self.path} was replaced while chatops was running"
        if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH) or not os.access(self.path, os.W_OK):
            return f"the SQLite file {self.path} is read-only"
        return None


_WATCHED: weakref.WeakKeyDictionary[sa.Engine, SQLiteFile] = weakref.WeakKeyDictionary()


def watch(engine: sa.Engine) -> None:
    """Check ``engine``'s file from now on (nothing to do for PostgreSQL or an in-memory database)."""
    url = engine.url
    path = url.database
    if url.get_backend_name() != "sqlite" or not path or path == ":memory:" or url.query.get("mode") == "memory":
        return
    watched = SQLiteFile(os.path.abspath(path))
    _WATCHED[engine] = watched

    def connected(_dbapi_connection: Any, _record: Any) -> None:
        watched.opened()

    event.listen(engine, "connect", connected)


def file_problem(engine: sa.Engine) -> str | None:
    """Why ``engine`` cannot use its SQLite file any more (deleted, replaced, read-only), else ``None``."""
    watched = _WATCHED.get(engine)
    return None if watched is None else watched.problem()


def check_file(engine: sa.Engine) -> None:
    """Raise StorageError (an outage: 503, not ready) when ``engine``'s SQLite file cannot be used any more."""
    problem = file_problem(engine)
    if problem is not None:
        raise StorageError(
            f"cannot use the database: {problem}",
            hint="restore the file (or its write permission) and restart chatops; writes are refused meanwhile",
        )
