"""Database engines: the SQLite default (WAL, busy timeout, foreign keys) and PostgreSQL through psycopg2.

``create_db_engine`` never connects; the first use does. Connection failures become :class:`StorageError`
naming the host and port (never the password).

Dead connections (a restarted server, a firewall that dropped an idle socket) are found two ways. A connection
that sat idle in the pool for more than ``PING_AFTER_IDLE_SECONDS`` is pinged before it is handed out, and
replaced if the ping fails. A connection in steady use is not pinged: SQLAlchemy's ``pool_pre_ping`` would cost
a ``SELECT 1`` round trip on every checkout, which measured at ~17% of a webhook's time. If such a connection
turns out dead, the statement fails, SQLAlchemy invalidates it and every older connection of the pool, and the
caller sees one StorageError (the webhook write retries once by itself, see :mod:`chatops.db.ingest`).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import ConnectionPoolEntry

from chatops.config.settings import mask_url
from chatops.db import sqlite_file
from chatops.errors import ConfigError, StorageError, UnstorableError

SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_SECONDS = 10.0
# A long-lived connection whose server vanished without closing it (a host gone, a network partition) is found dead
# by TCP keepalive: probes after 10 s of silence, 3 more 5 s apart (keep_alive).
KEEPALIVE = (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 3))


def parse_database_url(url: str) -> URL:
    """The SQLAlchemy URL for ``url``; ``postgres://`` and ``postgresql://`` both mean psycopg2.

    Raises ConfigError when the URL is malformed or names another database.
    """
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:  # ValueError: a port that is not a number
        raise _malformed(url, exc) from None
    backend = parsed.get_backend_name()
    if backend == "postgres" or backend == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg2")
    elif backend != "sqlite":
        raise ConfigError(
            f"CHATOPS_DATABASE_URL: unsupported database {backend!r}",
            hint="chatops runs on SQLite (sqlite:///chatops.db) or PostgreSQL (postgresql://…)",
        )
    elif parsed.database in (None, "", ":memory:"):
        # Every pooled connection would open its own empty database, and an acknowledged message would be gone
        # at exit: the inbox must be durable.
        raise ConfigError(
            f"CHATOPS_DATABASE_URL: {url!r} is an in-memory SQLite database; chatops needs a file",
            hint="use sqlite:///chatops.db (a file beside you) or sqlite:////var/lib/chatops/chatops.db",
        )
    return parsed


def _malformed(url: str, exc: BaseException) -> ConfigError:
    """A ConfigError for a URL that SQLAlchemy or the driver cannot read; the URL is shown with its password
    masked and the parser's own words are left out (they quote pieces of the URL, the password among them)."""
    what = "a port that is not a number" if "port" in str(exc) or "int()" in str(exc) else "a malformed URL"
    return ConfigError(
        f"CHATOPS_DATABASE_URL: cannot parse {mask_url(url)!r} ({what})",
        hint="expected sqlite:///path/to.db or postgresql://user:password@host:port/database; "
        "percent-encode @ : / ? # in the user name and password (e.g. @ as %40)",
    )


def create_db_engine(
    url: str, *, pool_size: int = 8, echo: bool = False, ping_after_idle: float = PING_AFTER_IDLE_SECONDS
) -> Engine:
    """An engine for ``url`` with a pool that holds ``pool_size`` connections and pings those that sat idle
    for more than ``ping_after_idle`` seconds.

    Size the pool to the server's threads plus workers: a request waits for a free connection otherwise.
    """
    parsed = parse_database_url(url)
    try:
        engine = _create_engine(parsed, pool_size=pool_size, echo=echo)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:  # e.g. ?port=abc, read only here
        raise _malformed(url, exc) from None
    _ping_after_idle(engine, ping_after_idle)
    return engine


def _create_engine(parsed: URL, *, pool_size: int, echo: bool) -> Engine:
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        )
        event.listen(engine, "connect", _configure_sqlite)
        event.listen(engine, "begin", _begin_immediate)
        sqlite_file.watch(engine)  # a deleted or read-only file is an outage, not a silent success
    else:
        engine = sa.create_engine(
            parsed,
            echo=echo,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            connect_args={"connect_timeout": 5, "application_name": "chatops"},
        )
    return engine


def _ping_after_idle(engine: Engine, seconds: float) -> None:
    """Ping a connection at checkout only when it sat idle in the pool for more than ``seconds``.

    Raising DisconnectionError from a checkout listener makes the pool drop the connection and hand out a new one.
    """
    dialect = engine.dialect

    def checked_in(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= seconds:
            return  # new, or in steady use
        try:
            dialect.do_ping(dbapi_connection)
        except dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DisconnectionError(f"idle connection failed its ping: {exc}") from exc

    event.listen(engine.pool, "checkin", checked_in)
    event.listen(engine.pool, "checkout", checkout)


def _configure_sqlite(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event issues BEGIN IMMEDIATE itself, so a
    # transaction takes the write lock up front instead of failing with "database is locked" on upgrade.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL is durable across application crashes
    cursor.close()


def _begin_immediate(connection: sa.Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def describe_database(engine: Engine) -> str:
    """Where the database is, for banners and errors: ``PostgreSQL at host:port/db`` or ``SQLite file x.db``."""
    url = engine.url
    if url.get_backend_name() == "sqlite":
        return f"SQLite file {url.database or ':memory:'}"
    return f"PostgreSQL at {url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"


def check_connection(engine: Engine) -> None:
    """Connect once and run ``SELECT 1``. Raises StorageError naming the server (never the password)."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        raise storage_error(engine, exc) from None


# Errors about the data, not the connection: the same statement fails the same way on every attempt.
# ValueError covers what the drivers raise before anything reaches the server (psycopg2 refuses NUL in a string;
# both drivers refuse lone surrogates with UnicodeEncodeError); OverflowError is sqlite3's int beyond 64 bits.
PERMANENT_DBAPI_ERRORS = (sa.exc.DataError, sa.exc.IntegrityError)
PERMANENT_DRIVER_ERRORS = (ValueError, OverflowError)


def storage_error(engine: Engine, exc: BaseException) -> StorageError | UnstorableError:
    """A one-line error for a driver error, with the first line of the driver's reason (password masked).

    :class:`UnstorableError` when the database refused the data (:func:`is_permanent`), else :class:`StorageError`.
    """
    reason = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    detail = reason[0] if reason else type(exc).__name__
    password = engine.url.password
    if password:
        detail = detail.replace(str(password), "***")
    if is_permanent(exc):
        return UnstorableError(f"the database refused a value: {detail}")
    return StorageError(
        f"cannot use the database ({describe_database(engine)}): {detail}",
        hint="check CHATOPS_DATABASE_URL and that the server is running",
    )


def is_permanent(exc: BaseException) -> bool:
    """True when ``exc`` is about the data (retrying cannot help), False for the connection or the server."""
    if isinstance(exc, sa.exc.DBAPIError):
        return isinstance(exc, PERMANENT_DBAPI_ERRORS) and not exc.connection_invalidated
    if isinstance(exc, sa.exc.StatementError):
        # Not a driver error: a bind parameter failed to convert before the statement was sent (a value the JSON
        # serializer cannot encode is a TypeError here). The same value fails the same way every time.
        return True
    return isinstance(exc, PERMANENT_DRIVER_ERRORS)


@contextmanager
def storage_errors(engine: Engine) -> Iterator[None]:
    """Turn driver errors inside the block into one-line errors (see :func:`storage_error`): StorageError for
    the connection or server, UnstorableError for a value the database refused."""
    try:
        yield
    except (sa.exc.StatementError, *PERMANENT_DRIVER_ERRORS) as exc:
        error = storage_error(engine, exc)
        # The driver's error stays attached to a refused value (a log with exc_info shows where it came from);
        # a connection error is one line on its own.
        raise error from (exc if isinstance(error, UnstorableError) else None)


def keep_alive(fd: int) -> None:
    """Turn TCP keepalive (:data:`KEEPALIVE`) on for a connection's socket, where the platform has the options.

    For the connections a process keeps outside the pool for its whole life (the wake-up listener, the instance
    lock): nothing else would find out that their server is gone.
    """
    try:
        sock = socket.socket(fileno=socket.dup(fd))
    except OSError:
        return  # a Unix-domain socket is fine as it is
    with sock:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        for name, value in KEEPALIVE:
            if hasattr(socket, name):
                sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, name), value)
