"""A consistent copy of a SQLite database while chatops runs: SQLite's online backup API.

The copy is taken page by page under SQLite's own locking, so webhooks and workers go on writing while it runs
(a write during the copy makes SQLite restart the remaining steps; nothing is torn). PostgreSQL is backed up with
``pg_dump`` (docs/backups.md), never from here.

Writes ``out`` (via a temporary file beside it, renamed when complete and checked). Raises ChatopsError for a
PostgreSQL URL, a missing database file or an existing ``out``; StorageError when SQLite fails.
"""

from __future__ import annotations

import os
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from chatops.config.settings import mask_url
from chatops.db.connect import parse_database_url
from chatops.errors import ChatopsError, StorageError

PAGES_PER_STEP = 1024  # a step holds the read lock only briefly: writers wait at most one step


@dataclass(frozen=True)
class BackupResult:
    """What was written: the file and its size."""

    path: Path
    bytes: int


def backup_sqlite(database_url: str, out: Path) -> BackupResult:
    """Copy the SQLite database of ``database_url`` to ``out`` (which must not exist) and check the copy."""
    parsed = parse_database_url(database_url)
    if parsed.get_backend_name() != "sqlite":
        raise ChatopsError(
            f"chatops backup copies SQLite files; {mask_url(database_url)} is PostgreSQL",
            hint="back PostgreSQL up with pg_dump: deploy/backup/chatops-backup and its timer (docs/backups.md)",
        )
    source = Path(parsed.database or "")
    if not parsed.database or parsed.database == ":memory:" or not source.is_file():
        raise ChatopsError(f"no SQLite file at {source}", hint="check CHATOPS_DATABASE_URL (or --database-url)")
    if out.exists():
        raise ChatopsError(f"{out} already exists", hint="give a new file name; a backup never overwrites")
    partial = out.with_name(f".{out.name}.partial")
    try:
        with (
            closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src,
            closing(sqlite3.connect(partial)) as dst,
        ):
            src.backup(dst, pages=PAGES_PER_STEP)
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise StorageError(f"the copy of {source} failed its check: {check}", hint="is the source damaged?")
        os.replace(partial, out)
    except sqlite3.Error as exc:
        raise StorageError(f"backing up {source} failed: {exc}", hint=f"is {out.parent} writable?") from None
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(out, out.stat().st_size)
