"""Schema migrations with Alembic, driven from code (the scripts live in ``chatops/db/migrations/``).

On PostgreSQL every migrator holds a session advisory lock while it reads the current revision and applies
what is pending, so concurrent ``chatops migrate`` runs (a deploy starting several processes) all succeed and
the schema is applied once. On SQLite the ``BEGIN IMMEDIATE`` of each transaction serialises them the same way.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError

from chatops.db.connect import parse_database_url, storage_error
from chatops.errors import ChatopsError, SchemaOutOfDateError, StorageError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# An arbitrary constant that names "chatops schema migration" among the server's advisory locks.
ADVISORY_LOCK_KEY = 0x63686174_6F7073


@dataclass(frozen=True)
class Revision:
    """One migration script."""

    id: str
    message: str


@dataclass(frozen=True)
class MigrationStatus:
    """Where the database stands: ``pending`` are the revisions between ``current`` and ``head``."""

    current: str | None
    head: str
    pending: tuple[Revision, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def _config() -> Config:
    config = Config(output_buffer=io.StringIO())
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    """The newest revision shipped with this version of chatops."""
    head = _scripts().get_current_head()
    assert head is not None, "chatops ships at least one migration"
    return head


def history() -> list[Revision]:
    """Every revision, oldest first."""
    revisions = [Revision(r.revision, r.doc or "") for r in _scripts().walk_revisions()]
    return revisions[::-1]


def _pending(current: str | None, target: str) -> list[Revision]:
    scripts = _scripts()
    return [
        Revision(r.revision, r.doc or "") for r in reversed(list(scripts.iterate_revisions(target, current or "base")))
    ]


def _current(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def migration_status(engine: sa.Engine) -> MigrationStatus:
    """Current revision, head and pending revisions. Raises StorageError when the database is unreachable."""
    current = schema_revision(engine)
    head = head_revision()
    if current is not None and current not in {r.id for r in history()}:
        raise StorageError(
            f"the database is at revision {current!r}, which this version of chatops does not know",
            hint="it was migrated by a newer chatops; upgrade chatops or run its `chatops migrate --to` first",
        )
    return MigrationStatus(current, head, tuple(_pending(current, head)))


def ensure_schema_current(engine: sa.Engine) -> None:
    """Raise SchemaOutOfDateError unless the database is at head."""
    status = migration_status(engine)
    if not status.up_to_date:
        raise SchemaOutOfDateError(
            f"the database schema is behind: at {status.current or 'empty'}, head is {status.head} "
            f"({len(status.pending)} pending)",
            hint="run `chatops migrate` (or start with `chatops serve --migrate`)",
        )


@contextmanager
def _migration_lock(engine: sa.Engine) -> Iterator[sa.Connection]:
    try:
        with engine.connect() as connection:
            postgres = engine.dialect.name == "postgresql"
            if postgres:
                connection.execute(sa.select(sa.func.pg_advisory_lock(ADVISORY_LOCK_KEY)))
                connection.commit()
            try:
                yield connection
            finally:
                if postgres:
                    connection.rollback()
                    connection.execute(sa.select(sa.func.pg_advisory_unlock(ADVISORY_LOCK_KEY)))
                    connection.commit()
    except sa.exc.DBAPIError as exc:
        raise storage_error(engine, exc) from None


@dataclass(frozen=True)
class MigrationPlan:
    """What ``migrate(to=…)`` would do now: ``steps`` in the order they would run; for a downgrade, the tables it
    would drop with their row counts."""

    current: str | None
    target: str
    direction: str
    steps: tuple[Revision, ...]
    dropped_tables: tuple[tuple[str, int], ...] = ()


def plan_migration(engine: sa.Engine, *, to: str = "head") -> MigrationPlan:
    """What migrating to ``to`` would do, without doing it. Raises StorageError like :func:`migrate`."""
    target = _resolve(to)
    try:
        with engine.connect() as connection:
            current = _current(connection)
            direction, steps = _plan(current, target)
            dropped: tuple[tuple[str, int], ...] = ()
            if direction == "downgrade":
                kept = _tables_at(engine, target)
                names = sorted(set(sa.inspect(connection).get_table_names()) - kept - {"alembic_version"})
                dropped = tuple((name, _count_rows(connection, name)) for name in names)
    except sa.exc.DBAPIError as exc:
        raise storage_error(engine, exc) from None
    return MigrationPlan(current, target, direction, tuple(steps), dropped)


def _tables_at(engine: sa.Engine, target: str) -> set[str]:
    """The tables the migrations create up to ``target`` (read from their offline SQL, so nothing runs)."""
    if target == "base":
        return set()
    config = _config()
    config.attributes["url"] = engine.url
    command.upgrade(config, target, sql=True)
    buffer = config.output_buffer
    assert isinstance(buffer, io.StringIO)
    return set(re.findall(r"^CREATE TABLE \"?(\w+)", buffer.getvalue(), re.MULTILINE))


def _count_rows(connection: sa.Connection, table: str) -> int:
    return int(connection.execute(sa.select(sa.func.count()).select_from(sa.table(table))).scalar_one())


def migrate(
    engine: sa.Engine, *, to: str = "head", allow_downgrade: Collection[str] | None = None
) -> tuple[str, list[Revision]]:
    """Move the schema to revision ``to`` (``head``, ``base`` or an id, up or down).

    A downgrade (it drops tables and columns, and the data in them) runs only when every revision it reverts is in
    ``allow_downgrade`` (the ids the operator agreed to, e.g. from :func:`plan_migration`). Returns the direction
    (``upgrade``, ``downgrade`` or ``none``) and the revisions applied or reverted, in the order they ran. Raises
    StorageError for an unknown revision or an unreachable database, ChatopsError for a downgrade not allowed.
    """
    config = _config()
    with _migration_lock(engine) as connection, connection.begin():
        current = _current(connection)
        target = _resolve(to)
        direction, steps = _plan(current, target)
        if direction == "downgrade" and not {r.id for r in steps} <= set(allow_downgrade or ()):
            raise ChatopsError(
                f"refusing to downgrade from {current} to {target}: "
                f"reverting {', '.join(r.id for r in steps)} was not confirmed",
                hint="nothing was changed; the database may have moved meanwhile: look again and confirm",
            )
        if steps:
            config.attributes["connection"] = connection
            if direction == "upgrade":
                command.upgrade(config, target)
            else:
                command.downgrade(config, target)
    return direction, steps


def _resolve(to: str) -> str:
    if to in ("head", "heads"):
        return head_revision()
    if to == "base":
        return "base"
    try:
        revision = _scripts().get_revision(to)
    except CommandError as exc:
        raise StorageError(f"unknown revision {to!r}: {exc}", hint="see `chatops migrate --history`") from None
    if revision is None:
        raise StorageError(f"unknown revision {to!r}", hint="see `chatops migrate --history`")
    return revision.revision


def _plan(current: str | None, target: str) -> tuple[str, list[Revision]]:
    if (current is None and target == "base") or current == target:
        return "none", []
    if current is None:
        return "upgrade", _pending(None, target)
    ancestors_of_current = {r.id for r in _pending(None, current)} if current else set()
    if target == "base" or target in ancestors_of_current:
        reverted = _pending(None if target == "base" else target, current)
        return "downgrade", reverted[::-1]
    return "upgrade", _pending(current, target)


def render_sql(database_url: str, *, to: str = "head") -> str:
    """The SQL that upgrades an empty database to ``to``, for review or for a DBA; touches no database."""
    config = _config()
    config.attributes["url"] = parse_database_url(database_url)
    command.upgrade(config, _resolve(to), sql=True)
    buffer = config.output_buffer
    assert isinstance(buffer, io.StringIO)
    return buffer.getvalue()


def schema_revision(engine: sa.Engine) -> str | None:
    """The database's current revision (``None`` when empty). Cheap enough for every ``/readyz``.

    Raises StorageError when the database is unreachable.
    """
    try:
        with engine.connect() as connection:
            return _current(connection)
    except sa.exc.DBAPIError as exc:
        raise storage_error(engine, exc) from None
