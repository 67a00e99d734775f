"""``chatops forget``: erase one person's conversations, messages and turns (a data-subject request)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from chatops.cli import output


def forget_command(
    ctx: typer.Context,
    user: Annotated[str, typer.Option("--user", help="The person's id: WhatsApp wa_id or Messenger PSID.")],
    channel: Annotated[str | None, typer.Option("--channel", help="whatsapp or messenger (default: both).")] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask; required when stdin is not a terminal.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be removed; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Delete a person's conversations with their messages and turns; anonymise audit entries naming them.

    Example: chatops forget --user 4915112345678 --channel whatsapp --yes
    """
    if channel is not None and channel not in ("whatsapp", "messenger"):
        raise typer.BadParameter("expected whatsapp or messenger", param_hint="--channel")
    from chatops.cli.app import database_engine
    from chatops.db.erasure import forget_user

    engine = database_engine(ctx)
    try:
        if not dry_run and not yes:
            preview = forget_user(engine, user, channel=channel, dry_run=True)
            if not preview.counts["conversations"]:
                _print(preview, as_json=as_json)
                return
            if not sys.stdin.isatty():
                output.error(
                    f"forgetting {user} deletes {preview.counts['conversations']} conversation(s) for good",
                    hint="pass --yes to confirm (or --dry-run to see what would go)",
                )
                raise typer.Exit(1)
            # Asked on stderr and read here (typer.confirm writes to stdout, which --json keeps for the report).
            output.stderr.print(
                f"Delete {preview.counts['conversations']} conversation(s) of {user} and everything in them? [y/N] ",
                end="",
                markup=False,
            )
            if sys.stdin.readline().strip().lower() not in ("y", "yes"):
                output.error("not confirmed: nothing was deleted")
                raise typer.Exit(1)
        report = forget_user(engine, user, channel=channel, dry_run=dry_run)
    finally:
        engine.dispose()
    _print(report, as_json=as_json)


def _print(report: object, *, as_json: bool) -> None:
    from dataclasses import asdict

    from chatops.db.erasure import ErasureReport

    assert isinstance(report, ErasureReport)
    if as_json:
        output.print_json(asdict(report))
        return
    where = f" on {report.channel}" if report.channel else ""
    if not report.counts["conversations"]:
        output.info(f"No conversation of {report.user_id}{where}: nothing to forget.")
        return
    verb = "Would remove" if report.dry_run else "Removed"
    output.info(f"{verb} for {report.user_id}{where}:")
    for name, count in report.counts.items():
        output.info(f"{count:>9,}  {name.replace('_', ' ')}")
