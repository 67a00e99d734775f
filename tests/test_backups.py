"""Backups as docs/backups.md tells them: the pg_dump script and the restore drill run for real against the local
PostgreSQL, `chatops backup` for SQLite, and the backup units verified by systemd-analyze."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.db.connect import parse_database_url
from tests.conftest import ROOT
from tests.databases import postgres_database

runner = CliRunner()
DOCS = ROOT / "docs" / "backups.md"
SCRIPT = ROOT / "deploy" / "backup" / "chatops-backup"
TABLES = ("conversations", "inbound_messages", "outbound_messages", "turns")


@pytest.fixture(autouse=True)
def example_bot(tmp_path: Path) -> None:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)


def a_conversation(url: str) -> dict[str, int]:
    """Migrate ``url``, hold one conversation of two turns there (through `chatops simulate`); the row counts."""
    assert runner.invoke(app, ["migrate", "--database-url", url]).exit_code == 0
    for text in ("hello", "where is my order?"):
        result = runner.invoke(app, ["simulate", "--database-url", url, text])
        assert result.exit_code == 0, result.output
    counts = row_counts(url)
    assert all(counts.values()), counts
    return counts


def row_counts(url: str) -> dict[str, int]:
    engine = sa.create_engine(parse_database_url(url), poolclass=sa.NullPool)
    with engine.connect() as connection:
        counts = {table: connection.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() for table in TABLES}
    engine.dispose()
    return counts


def drill_lines() -> list[str]:
    """The restore drill's commands from docs/backups.md, without the lines that set DUMP, SERVER and DRILL."""
    block = re.search(r"<!-- restore drill.*?```sh\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert block
    lines = [line for line in block.group(1).splitlines() if line.strip()]
    assert [line.split("=", 1)[0] for line in lines[:3]] == ["DUMP", "SERVER", "DRILL"]
    return lines[3:]


def tool_environment() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)  # the chatops of this venv, first on PATH
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
    return {**environ, "PATH": f"{bin_dir}:{environ.get('PATH', '/usr/bin:/bin')}"}


@pytest.mark.postgres
@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_the_documented_backup_and_restore_keep_every_conversation(tmp_path: Path) -> None:
    dumps = tmp_path / "dumps"
    with postgres_database() as source:
        before = a_conversation(source)
        # Retention: a dump past BACKUP_KEEP_DAYS goes, a recent one stays.
        dumps.mkdir()
        old, recent = dumps / "chatops-20200101T031500Z.dump", dumps / "chatops-20200102T031500Z.dump"
        for path, days in ((old, 20), (recent, 2)):
            path.write_bytes(b"old")
            os.utime(path, (time.time() - days * 86400,) * 2)
        env = {**tool_environment(), "CHATOPS_DATABASE_URL": source, "BACKUP_DIR": str(dumps), "BACKUP_KEEP_DAYS": "14"}
        result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        (dump,) = [p for p in dumps.glob("chatops-*.dump") if p not in (old, recent)]
        assert result.stdout.startswith(f"chatops-backup: wrote {dump} (")
        assert sorted(dumps.iterdir()) == sorted([recent, dump])

    server = re.sub(r"^postgresql\+\w+://", "postgresql://", source.rpartition("/")[0])  # libpq's form
    drill = f"chatops_drill_{os.getpid()}"
    env = {**tool_environment(), "DUMP": str(dump), "SERVER": server, "DRILL": drill}
    try:
        result = subprocess.run(
            ["sh", "-euc", "\n".join(drill_lines())], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "up to date" in result.stdout
        assert row_counts(f"{server}/{drill}") == before
    finally:
        subprocess.run(["psql", f"{server}/postgres", "-c", f'DROP DATABASE IF EXISTS "{drill}" WITH (FORCE)'],
                       capture_output=True, timeout=60)  # fmt: skip


def test_the_backup_script_refuses_sqlite(tmp_path: Path) -> None:
    env = {**tool_environment(), "CHATOPS_DATABASE_URL": "sqlite:///chatops.db", "BACKUP_DIR": str(tmp_path)}
    result = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "back SQLite up with: chatops backup --out FILE" in result.stderr


def test_chatops_backup_copies_a_sqlite_database_that_migrate_status_finds_clean(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    before = a_conversation(url)
    result = runner.invoke(app, ["backup", "--database-url", url, "--out", "copy.db"])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(r"wrote copy\.db \([\d,]+ bytes\)\n", result.stdout)
    copy = f"sqlite:///{tmp_path / 'copy.db'}"
    assert row_counts(copy) == before
    status = runner.invoke(app, ["migrate", "--status", "--database-url", copy])
    assert status.exit_code == 0
    assert status.stdout.endswith("up to date\n")
    assert sorted(p.name for p in tmp_path.glob("*copy*")) == ["copy.db"]  # no partial file left

    again = runner.invoke(app, ["backup", "--database-url", url, "--out", "copy.db"])
    assert again.exit_code == 1
    assert again.stderr.splitlines() == [
        "Error: copy.db already exists",
        "Hint: give a new file name; a backup never overwrites",
    ]


def test_chatops_backup_points_postgresql_at_pg_dump() -> None:
    result = runner.invoke(app, ["backup", "--database-url", "postgresql://app:secret@db/chatops", "--out", "x.db"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: chatops backup copies SQLite files; postgresql://app:***@db/chatops is PostgreSQL",
        "Hint: back PostgreSQL up with pg_dump: deploy/backup/chatops-backup and its timer (docs/backups.md)",
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_backup_units_verify_clean(tmp_path: Path) -> None:
    units = ("chatops-backup.service", "chatops-backup.timer")
    for unit in units:
        text = (ROOT / "deploy" / "systemd" / unit).read_text().replace("/usr/local/bin/chatops-backup", str(SCRIPT))
        (tmp_path / unit).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in units)], capture_output=True, text=True
    )
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert (result.returncode, ours) == (0, [])
