"""``chatops migrate``: move the database schema (upgrade by default), show status, history or SQL."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from chatops.cli import output

if TYPE_CHECKING:
    from chatops.db.migrate import MigrationPlan


def migrate_command(
    ctx: typer.Context,
    status: Annotated[bool, typer.Option("--status", help="Show current vs head; exit 1 when behind.")] = False,
    history: Annotated[bool, typer.Option("--history", help="List every revision.")] = False,
    to: Annotated[str, typer.Option("--to", help="Target revision: head, base or an id (up or down).")] = "head",
    sql: Annotated[bool, typer.Option("--sql", help="Print the SQL from empty to --to; touch nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help="Confirm a downgrade (it drops tables and their data).")
    ] = False,
) -> None:
    """Upgrade the database schema to the latest revision (or --to REV).

    A downgrade asks first on a terminal and needs --yes anywhere else.

    Example: chatops migrate --status   (exit 1 when migrations are pending, for deploy scripts)
    """
    from chatops.cli.app import settings_from

    settings = settings_from(ctx, uses=("database_url", "log_level"))
    from chatops.db import migrate as migrations

    if history:
        revisions = migrations.history()
        if as_json:
            output.print_json([{"id": r.id, "message": r.message} for r in revisions])
        for revision in revisions if not as_json else ():
            output.info(f"{revision.id}  {revision.message}")
        return
    if sql:
        typer.echo(migrations.render_sql(settings.database_url, to=to), nl=False)
        return

    from chatops.cli.app import database_engine
    from chatops.config.settings import mask_url

    engine = database_engine(ctx, settings=settings)
    try:
        if status:
            state = migrations.migration_status(engine)
            if as_json:
                output.print_json(
                    {
                        "database": mask_url(settings.database_url),
                        "current": state.current,
                        "head": state.head,
                        "pending": [{"id": r.id, "message": r.message} for r in state.pending],
                    }
                )
            else:
                output.info(f"database: {mask_url(settings.database_url)}")
                output.info(f"current:  {state.current or '(empty)'}")
                output.info(f"head:     {state.head}")
                for revision in state.pending:
                    output.info(f"pending:  {revision.id}  {revision.message}", style="yellow")
                output.info("up to date" if state.up_to_date else f"{len(state.pending)} pending")
            if not state.up_to_date:
                raise typer.Exit(1)
            return
        plan = migrations.plan_migration(engine, to=to)
        confirmed = [revision.id for revision in plan.steps] if plan.direction == "downgrade" else []
        if confirmed and not yes:
            _confirm_downgrade(plan, database=mask_url(settings.database_url), to=to)
        direction, steps = migrations.migrate(engine, to=to, allow_downgrade=confirmed)
        if as_json:
            output.print_json({"direction": direction, "revisions": [r.id for r in steps]})
        elif not steps:
            output.info(f"Nothing to do: {mask_url(settings.database_url)} is at {to}.")
        else:
            verb = "Applied" if direction == "upgrade" else "Reverted"
            for revision in steps:
                output.info(f"{verb} {revision.id}  {revision.message}", style="green")
    finally:
        engine.dispose()


def _confirm_downgrade(plan: MigrationPlan, *, database: str, to: str) -> None:
    """Say what the downgrade would undo and drop; ask on a terminal, else stop (exit 1) asking for --yes."""
    lines = [f"Downgrading {database} from {plan.current} to {plan.target} reverts:"]
    lines += [f"  {revision.id}  {revision.message}" for revision in plan.steps]
    if plan.dropped_tables:
        lines.append("and drops these tables with every row in them:")
        lines += [f"  {name} ({rows:,} row{'' if rows == 1 else 's'})" for name, rows in plan.dropped_tables]
    else:
        lines.append("No table is dropped, but what those revisions added (columns, indexes) goes with its data.")
    for line in lines:
        output.stderr.print(line, markup=False)
    if sys.stdin.isatty():
        # Asked on stderr and read here rather than with typer.confirm, which writes a space to stdout (--json).
        output.stderr.print("Downgrade? [y/N] ", end="", markup=False)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            output.error("not confirmed: nothing was changed")
            raise typer.Exit(1)
        return
    output.error(
        "a downgrade deletes data: it needs --yes",
        hint=f"back up the database first, then run `chatops migrate --to {to} --yes`",
    )
    raise typer.Exit(1)
