"""Databases for a run: a fresh PostgreSQL database (``chatops_bench_<random>``, dropped afterwards) or SQLite file.

The server comes from ``CHATOPS_BENCH_DATABASE_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``); the
database named in it is only used to connect and create the benchmark's own.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from bench.results import Skip
from chatops.db.connect import parse_database_url

DEFAULT_SERVER_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    """The PostgreSQL server the benchmarks use."""
    return os.environ.get("CHATOPS_BENCH_DATABASE_URL", DEFAULT_SERVER_URL)


def admin_engine(url: str) -> sa.Engine:
    """An engine on ``url`` for short administrative statements: autocommit, no pool."""
    return sa.create_engine(
        parse_database_url(url),
        poolclass=sa.NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )


@contextmanager
def postgres_database(server: str) -> Iterator[str]:
    """The URL of a new empty database on ``server``; dropped (connections terminated) on exit.

    Raises Skip when the server is unreachable: the PostgreSQL figures cannot be measured, the others can.
    """
    admin = admin_engine(server)
    name = f"chatops_bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise Skip(f"PostgreSQL at {server} is unreachable ({first}); set CHATOPS_BENCH_DATABASE_URL") from None
    try:
        yield parse_database_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def sqlite_database(folder: Path) -> str:
    """The URL of a new SQLite file in ``folder`` (removed with the run's work directory)."""
    return f"sqlite:///{folder / f'bench_{uuid.uuid4().hex[:8]}.db'}"


def migrate(chatops: Sequence[str], url: str, *, cwd: Path) -> None:
    """``chatops --database-url URL migrate``; raises RuntimeError with the output when it fails."""
    done = subprocess.run(
        [*chatops, "--database-url", url, "migrate"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"chatops migrate failed ({done.returncode}): {(done.stderr or done.stdout)[-800:]}")


class RowCounter:
    """Counts rows of one table with short-lived connections (so it never holds a lock the server needs)."""

    def __init__(self, url: str) -> None:
        self._engine = sa.create_engine(parse_database_url(url), poolclass=sa.NullPool)

    def count(self, table: str, where: str = "") -> int:
        with self._engine.connect() as connection:
            sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
            return int(connection.execute(sa.text(sql)).scalar_one())

    def scalars(self, sql: str) -> list[object]:
        with self._engine.connect() as connection:
            return list(connection.execute(sa.text(sql)).scalars())

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with self._engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.text(sql))]

    def settle(self, table: str, *, where: str = "", timeout: float = 10.0, interval: float = 0.2) -> int:
        """The row count once it stops changing (in-flight requests have landed), waiting at most ``timeout``."""
        deadline = time.monotonic() + timeout
        last = self.count(table, where)
        while time.monotonic() < deadline:
            time.sleep(interval)
            now = self.count(table, where)
            if now == last:
                return now
            last = now
        return last

    def close(self) -> None:
        self._engine.dispose()


def seed_sent_messages(url: str, provider_ids: Sequence[str], user_ids: Sequence[str], *, account_id: str) -> None:
    """Outbound WhatsApp messages in status ``sent`` with ``provider_ids`` (message ``n`` to
    ``user_ids[n % len(user_ids)]``), and their conversations where missing: what status webhooks report on.
    """
    from datetime import UTC, datetime

    from chatops.db.tables import conversations, outbound_messages

    now = datetime.now(UTC)
    engine = sa.create_engine(parse_database_url(url), poolclass=sa.NullPool)
    try:
        with engine.begin() as connection:
            c = conversations.c
            known = dict(
                connection.execute(
                    sa.select(c.user_id, c.id).where(c.channel == "whatsapp", c.account_id == account_id)
                ).all()
            )
            missing = [user for user in dict.fromkeys(user_ids) if user not in known]
            if missing:
                connection.execute(
                    conversations.insert(),
                    [
                        {
                            "channel": "whatsapp",
                            "account_id": account_id,
                            "user_id": user,
                            "state": {},
                            "mode": "bot",
                            "turn_count": 0,
                            "created_at": now,
                            "updated_at": now,
                        }
                        for user in missing
                    ],
                )
                known = dict(
                    connection.execute(
                        sa.select(c.user_id, c.id).where(c.channel == "whatsapp", c.account_id == account_id)
                    ).all()
                )
            connection.execute(
                outbound_messages.insert(),
                [
                    {
                        "conversation_id": known[user_ids[n % len(user_ids)]],
                        "body": {"kind": "text", "text": "Your order is on its way."},
                        "status": "sent",
                        "provider_message_id": provider_id,
                        "attempts": 1,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                        "sent_at": now,
                    }
                    for n, provider_id in enumerate(provider_ids)
                ],
            )
    finally:
        engine.dispose()
