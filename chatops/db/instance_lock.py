"""The instance lock on PostgreSQL: a session advisory lock per instance name, on a connection of its own.

A process with workers holds ``pg_try_advisory_lock(instance_key(name))`` on one connection outside the pool for its
whole life (:mod:`chatops.engine.instance_lock` says why and what happens when the connection is lost). The lock
belongs to the session: PostgreSQL frees it when the session ends, which happens at once when the process exits or
is killed (its kernel closes the socket), and for a host that vanished (power cut, network gone) once the server's
TCP keepalive gives up on the socket: this session sets it to 10 s + 3 × 5 s (:data:`SERVER_KEEPALIVE`) instead of
the operating system's default of two hours. Advisory locks are per database: two deployments on one server, each
with its own database, never meet.

Every function raises :class:`~chatops.errors.StorageError` when the database fails.
"""

from __future__ import annotations

import hashlib
import logging
import os
import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from chatops.db.connect import keep_alive, storage_error

log = logging.getLogger(__name__)

# The server's keepalive on this session's socket (seconds; PostgreSQL settings any user may set for a session).
SERVER_KEEPALIVE = {"tcp_keepalives_idle": 10, "tcp_keepalives_interval": 5, "tcp_keepalives_count": 3}
KEY_PREFIX = b"chatops instance "  # sets these keys apart from other advisory locks (the migration lock's constant)

# Who holds the advisory lock of a 64-bit key: pg_locks splits the key into classid (high 32 bits) and objid (low
# 32 bits), objsubid 1. pg_stat_activity shows the holder's details to the same role (or pg_read_all_stats).
_HOLDER = """
SELECT a.application_name, host(a.client_addr), to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),
       l.pid
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = %s::oid AND l.objid = %s::oid
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.pid <> pg_backend_pid()
LIMIT 1
"""


def instance_key(name: str) -> int:
    """The advisory lock key of instance ``name``: the first 8 bytes of its BLAKE2b digest as a signed 64-bit
    integer, the same in every process and release (unlike ``hash()``)."""
    digest = hashlib.blake2b(KEY_PREFIX + name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def session_label() -> str:
    """This process for another one's error message (``application_name``, at most 63 bytes)."""
    return f"chatops pid {os.getpid()} on {socket.gethostname()}"[:63]


class LockSession:
    """One PostgreSQL session, outside ``engine``'s pool, that takes and keeps one instance's advisory lock.

    Not thread-safe: one caller at a time (:class:`~chatops.engine.instance_lock.InstanceLock` sees to it).
    """

    def __init__(self, engine: sa.Engine, key: int) -> None:
        """Connect (a connection of its own, detached from the pool). Raises StorageError."""
        self.engine = engine
        self.key = key
        with self._storage_errors():
            raw = engine.raw_connection()
            raw.detach()  # its own for the life of the process: closing it frees the lock
            connection: Any = raw.dbapi_connection
            self._connection = connection
            try:
                connection.autocommit = True  # no transaction left open on an idle session
                keep_alive(connection.fileno())
                with connection.cursor() as cursor:
                    cursor.execute("SELECT set_config('application_name', %s, false)", (session_label(),))
                    for name, seconds in SERVER_KEEPALIVE.items():
                        cursor.execute("SELECT set_config(%s, %s, false)", (name, str(seconds)))
            except BaseException:
                self.close()
                raise

    def try_lock(self) -> bool:
        """Take the lock unless another session holds it; ``True`` when this session holds it now."""
        with self._storage_errors(), self._connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", (self.key,))
            return bool(cursor.fetchone()[0])

    def holder(self) -> str | None:
        """Who holds the lock when another session does: ``chatops pid 1234 on web-1 (from 10.0.0.5, connected
        since 2026-12-07 18:02:11 UTC; PostgreSQL pid 5678)`` with what the server lets us see; ``None`` when no one
        (it was freed meanwhile)."""
        with self._storage_errors(), self._connection.cursor() as cursor:
            cursor.execute(_HOLDER, ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF))
            row = cursor.fetchone()
        if row is None:
            return None
        application, address, since, pid = row
        details = [f"from {address}" if address else "", f"connected since {since} UTC" if since else ""]
        where = ", ".join(detail for detail in details if detail)
        return f"{application or 'a session'} ({where + '; ' if where else ''}PostgreSQL pid {pid})"

    def alive(self) -> bool:
        """Whether the session is still there, without a round trip: an idle session's socket turns readable only
        when the server ends it (``pg_terminate_backend``, a restart) or keepalive finds the server gone."""
        if self._connection.closed:
            return False
        try:
            # Whatever arrived is read: a notice (kept by the driver), or the server's goodbye, a FATAL notice
            # followed by the end of the connection, which the next read raises.
            for _ in range(4):
                readable, _, _ = select.select([self._connection], [], [], 0)
                if not readable:
                    break
                self._connection.poll()
            if any(notice.startswith("FATAL") for notice in self._connection.notices):
                return False
        except (OSError, ValueError, self.engine.dialect.loaded_dbapi.Error):
            return False
        return not self._connection.closed

    def close(self) -> None:
        """End the session (the server frees the lock). Never raises."""
        try:
            # The driver's connection itself: the pool's close() of a detached connection would first roll back,
            # which fails (and logs an error) on a connection the server already ended.
            self._connection.close()
        except Exception as exc:  # already broken: nothing to give back
            log.debug("instance lock: closing its connection: %s", exc)

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        try:
            yield
        except (sa.exc.DBAPIError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise storage_error(self.engine, exc) from None
