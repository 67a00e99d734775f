"""``chatops audit``: read the audit log (chatops.db.audit), newest first."""

from __future__ import annotations

from typing import Annotated

import typer

from chatops.cli import output


def audit_command(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many entries.")] = 50,
    actor: Annotated[str | None, typer.Option("--actor", help="Only this key name (or cli:USER).")] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action, e.g. api.conversations_reply.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the audit log: who did what to which target, how it ended, and from where.

    Example: chatops audit --limit 20 --actor ops-bot
    """
    from chatops.cli.app import database_engine
    from chatops.db.audit import list_entries

    entries = list_entries(database_engine(ctx), limit=limit, actor=actor, action=action)
    if as_json:
        output.print_json([entry.__dict__ for entry in entries])
        return
    if not entries:
        output.info("the audit log is empty")
    for entry in entries:
        where = f" from {entry.client_address}" if entry.client_address else ""
        output.info(
            f"{entry.at.isoformat(timespec='seconds')}  {entry.actor}  {entry.action}  {entry.target or '-'}  "
            f"{entry.outcome}{where}",
            style=None if entry.outcome == "ok" else "yellow",
        )
