"""Test databases: SQLite files always, PostgreSQL when CHATOPS_TEST_DATABASE_URL names a server.

Every PostgreSQL database made here is called ``chatops_test_<random>`` and dropped afterwards, so runs repeat
cleanly against the same server. With CHATOPS_REQUIRE_POSTGRES=1 an unset variable or unreachable server fails
the run instead of skipping.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatops.db.connect import parse_database_url

BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def postgres_server_url() -> str:
    """The server URL from CHATOPS_TEST_DATABASE_URL, or skip (fail when PostgreSQL is required)."""
    url = os.environ.get("CHATOPS_TEST_DATABASE_URL")
    required = os.environ.get("CHATOPS_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail("CHATOPS_REQUIRE_POSTGRES=1 but CHATOPS_TEST_DATABASE_URL is not set")
        pytest.skip("PostgreSQL tests need CHATOPS_TEST_DATABASE_URL=postgresql://user@host:port/db")
    try:
        engine = sa.create_engine(parse_database_url(url), poolclass=sa.NullPool)
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        message = f"PostgreSQL at {url} is unreachable: {str(exc.orig).strip().splitlines()[0]}"
        if required:
            pytest.fail(message)
        pytest.skip(message)
    return url


@contextmanager
def postgres_database() -> Iterator[str]:
    """A new empty PostgreSQL database; dropped (connections terminated) on exit."""
    server = parse_database_url(postgres_server_url())
    name = f"chatops_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def empty_database(backend: str, folder: Path) -> Iterator[str]:
    """The URL of a new empty database of ``backend``."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'{uuid.uuid4().hex[:8]}.db'}"
    else:
        with postgres_database() as url:
            yield url


class MigratedTemplates:
    """Migrates one database per backend once per session; tests get a clean copy (SQLite) or truncation (PG)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.sqlite_template: Path | None = None
        self.postgres: str | None = None
        self._postgres_cm: AbstractContextManager[str] | None = None

    def sqlite_url(self) -> str:
        from chatops.db.connect import create_db_engine
        from chatops.db.migrate import migrate

        if self.sqlite_template is None:
            self.sqlite_template = self.folder / "template.db"
            engine = create_db_engine(f"sqlite:///{self.sqlite_template}")
            migrate(engine)
            engine.dispose()
        copy = self.folder / f"{uuid.uuid4().hex[:8]}.db"
        shutil.copyfile(self.sqlite_template, copy)
        return f"sqlite:///{copy}"

    def postgres_url(self) -> str:
        from chatops.db.connect import create_db_engine
        from chatops.db.migrate import migrate
        from chatops.db.tables import metadata

        if self.postgres is None:
            self._postgres_cm = postgres_database()
            self.postgres = self._postgres_cm.__enter__()
            engine = create_db_engine(self.postgres)
            migrate(engine)
            engine.dispose()
        engine = sa.create_engine(parse_database_url(self.postgres), poolclass=sa.NullPool)
        with engine.begin() as connection:
            names = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables)
            connection.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return self.postgres

    def close(self) -> None:
        if self._postgres_cm is not None:
            self._postgres_cm.__exit__(None, None, None)
