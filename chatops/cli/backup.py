"""``chatops backup``: a consistent copy of the SQLite database while chatops runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from chatops.cli import output


def backup_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="The backup file to write (must not exist).")],
) -> None:
    """Copy the SQLite database to --out with SQLite's online backup API (safe while serving).

    PostgreSQL is backed up with pg_dump (docs/backups.md).

    Example: chatops backup --out backups/chatops-$(date -u +%Y%m%d).db
    """
    from chatops.cli.app import settings_from
    from chatops.db.backup import backup_sqlite

    settings = settings_from(ctx, uses=("database_url", "log_level"))
    result = backup_sqlite(settings.database_url, out)
    output.info(f"wrote {result.path} ({result.bytes:,} bytes)", style="green")
