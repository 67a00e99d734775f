"""Migrations on SQLite and PostgreSQL through the real CLI: upgrade, status, history, --to, --sql, concurrency."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.config.settings import mask_url
from chatops.db.connect import create_db_engine
from chatops.db.migrate import head_revision, history, migration_status
from chatops.db.tables import metadata

runner = CliRunner()
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def chatops(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def tables_in(url: str) -> set[str]:
    engine = create_db_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrate_creates_schema_and_reports(empty_database_url: str) -> None:
    code, out, err = chatops("--database-url", empty_database_url, "migrate")
    assert (code, err) == (0, "")
    assert "Applied 0001  Initial schema" in out
    assert f"Applied {head_revision()}" in out
    assert tables_in(empty_database_url) >= set(metadata.tables) | {"alembic_version"}

    code, out, _ = chatops("--database-url", empty_database_url, "migrate")
    assert code == 0
    assert "Nothing to do" in out


def test_status_exit_code_follows_pending(empty_database_url: str) -> None:
    code, out, _ = chatops("--database-url", empty_database_url, "migrate", "--status")
    assert code == 1
    assert "current:  (empty)" in out
    assert f"pending:  {head_revision()}" in out

    chatops("--database-url", empty_database_url, "migrate")
    code, out, _ = chatops("--database-url", empty_database_url, "migrate", "--status", "--json")
    assert code == 0
    assert '"pending": []' in out


def test_round_trip_to_base_and_back(empty_database_url: str) -> None:
    chatops("--database-url", empty_database_url, "migrate")
    code, out, _ = chatops("--database-url", empty_database_url, "migrate", "--to", "base", "--yes")
    assert code == 0
    assert f"Reverted {head_revision()}" in out
    assert tables_in(empty_database_url) <= {"alembic_version"}
    code, out, _ = chatops("--database-url", empty_database_url, "migrate")
    assert code == 0
    assert f"Applied {head_revision()}" in out
    engine = create_db_engine(empty_database_url)
    assert migration_status(engine).up_to_date
    engine.dispose()


def test_a_downgrade_says_what_it_would_drop_and_needs_yes(empty_database_url: str) -> None:
    chatops("--database-url", empty_database_url, "migrate")
    engine = create_db_engine(empty_database_url)
    with engine.begin() as connection:
        connection.execute(
            sa.insert(metadata.tables["conversations"]).values(
                channel="whatsapp", account_id="1", user_id="2", state={}, created_at=NOW, updated_at=NOW
            )
        )
    engine.dispose()
    code, out, err = chatops("--database-url", empty_database_url, "migrate", "--to", "base")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"Downgrading {mask_url(empty_database_url)} from {head_revision()} to base reverts:",
        *[f"  {revision.id}  {revision.message}" for revision in history()[::-1]],
        "and drops these tables with every row in them:",
        *[f"  {name} ({'1 row' if name == 'conversations' else '0 rows'})" for name in sorted(metadata.tables)],
        "Error: a downgrade deletes data: it needs --yes",
        "Hint: back up the database first, then run `chatops migrate --to base --yes`",
    ]
    assert tables_in(empty_database_url) >= set(metadata.tables)  # nothing dropped


def test_a_downgrade_that_drops_no_table_needs_yes_too(empty_database_url: str) -> None:
    # Revisions 0001..0003 add only columns and indexes (0004 adds the bot_reloads table).
    first, *later = [revision for revision in history() if revision.id <= "0003"]
    chatops("--database-url", empty_database_url, "migrate", "--to", later[-1].id)
    code, out, err = chatops("--database-url", empty_database_url, "migrate", "--to", first.id)
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"Downgrading {mask_url(empty_database_url)} from {later[-1].id} to {first.id} reverts:",
        *[f"  {revision.id}  {revision.message}" for revision in later[::-1]],
        "No table is dropped, but what those revisions added (columns, indexes) goes with its data.",
        "Error: a downgrade deletes data: it needs --yes",
        f"Hint: back up the database first, then run `chatops migrate --to {first.id} --yes`",
    ]
    code, out, _ = chatops("--database-url", empty_database_url, "migrate", "--to", first.id, "--yes")
    assert (code, out) == (0, "".join(f"Reverted {r.id}  {r.message}\n" for r in later[::-1]))


@pytest.mark.slow
@pytest.mark.parametrize("answer", ["n", "y"])
def test_on_a_terminal_a_downgrade_asks_first(tmp_path: Path, answer: str) -> None:
    url = f"sqlite:///{tmp_path / 'asked.db'}"
    chatops("--database-url", url, "migrate")
    main, terminal = pty.openpty()  # stdin is a terminal, as for a person typing
    with os.fdopen(main, "wb", buffering=0) as keyboard:
        keyboard.write(f"{answer}\n".encode())
        done = subprocess.run(
            [sys.executable, "-m", "chatops", "--database-url", url, "migrate", "--to", "base"],
            stdin=terminal,
            capture_output=True,
            text=True,
            timeout=60,
        )
    os.close(terminal)
    # The terminal shows the typed answer and its newline; stderr has only the question.
    assert done.stderr.splitlines()[-1] == "Downgrade? [y/N] " + (
        "" if answer == "y" else "Error: not confirmed: nothing was changed"
    )
    if answer == "n":
        assert done.returncode == 1
        assert tables_in(url) >= set(metadata.tables)
    else:
        assert done.returncode == 0
        assert done.stdout == "".join(f"Reverted {r.id}  {r.message}\n" for r in history()[::-1])
        assert tables_in(url) <= {"alembic_version"}


def test_unknown_revision_is_a_clear_error(empty_database_url: str) -> None:
    code, _, err = chatops("--database-url", empty_database_url, "migrate", "--to", "nope")
    assert code == 1
    assert "Error: unknown revision 'nope'" in err
    assert "Hint: see `chatops migrate --history`" in err


def test_history_and_sql_touch_nothing(tmp_path: pytest.TempPathFactory) -> None:
    url = "postgresql://nobody:pw@127.0.0.1:1/none"  # never connected to
    code, out, _ = chatops("--database-url", url, "migrate", "--history")
    assert code == 0
    assert out.startswith("0001  Initial schema")
    assert f"\n{head_revision()}  " in out
    code, out, _ = chatops("--database-url", url, "migrate", "--sql")
    assert code == 0
    assert "CREATE TABLE conversations" in out
    assert "BIGSERIAL" in out  # PostgreSQL dialect


@pytest.mark.postgres
@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_concurrent_migrates_both_succeed(empty_database_url: str) -> None:
    """Two `chatops migrate` processes at once: both exit 0 and the schema is applied once."""
    command = [sys.executable, "-m", "chatops", "--database-url", empty_database_url, "migrate", "--json"]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: subprocess.run(command, capture_output=True, text=True, timeout=60), [1, 2]))
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    applied = sorted(r.stdout.count(head_revision()) for r in results)
    assert applied == [0, 1]


def test_unreachable_database_names_host_not_password() -> None:
    code, out, err = chatops("--database-url", "postgresql://app:hunter2@127.0.0.1:1/chatops", "migrate")
    assert code == 1
    assert err.startswith("Error: cannot use the database (PostgreSQL at 127.0.0.1:1/chatops)")
    assert "hunter2" not in out + err
    assert len(err.strip().splitlines()) == 2  # the error and its hint, no traceback


def test_malformed_url_is_a_usage_error() -> None:
    code, _, err = chatops("--database-url", "mysql://app@db/chatops", "migrate")
    assert code == 2
    assert err.startswith("Error: --database-url: expected sqlite:///path/to.db")


def test_migrations_build_exactly_the_tables_the_code_uses(database_url: str) -> None:
    """The scripts and chatops/db/tables.py agree (a column added to one only fails here)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = create_db_engine(database_url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    engine.dispose()
    assert differences == []
