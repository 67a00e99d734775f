"""``chatops serve``: the webhook server (waitress) with in-process workers and sender."""

from __future__ import annotations

from typing import Annotated

import typer

from chatops.cli import output


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0 picks a free one).", min=0, max=65535)] = 8000,
    threads: Annotated[int, typer.Option("--threads", help="Request threads.", min=1)] = 8,
    migrate: Annotated[bool, typer.Option("--migrate", help="Apply pending migrations before starting.")] = False,
) -> None:
    """Receive webhooks, answer through the bot, send replies.

    Example: CHATOPS_DATABASE_URL=postgresql://chatops@db/chatops chatops serve --host 0.0.0.0 --port 8000
    """
    from chatops.cli.app import settings_from

    settings = settings_from(ctx)

    from chatops.config.bot import load_bot
    from chatops.config.settings import mask_url
    from chatops.db.connect import check_connection, create_db_engine, describe_database
    from chatops.db.migrate import ensure_schema_current
    from chatops.db.migrate import migrate as apply_migrations
    from chatops.web.app import create_app
    from chatops.web.server import run_server

    bot = load_bot(settings.stages, templates_dir=settings.templates)
    db = create_db_engine(settings.database_url, pool_size=threads + 4)
    check_connection(db)
    if migrate:
        _, applied = apply_migrations(db)
        for revision in applied:
            output.info(f"Applied {revision.id}  {revision.message}", style="green")
    ensure_schema_current(db)
    app = create_app(settings, bot, db=db)

    def banner(bound_host: str, bound_port: int) -> None:
        base = f"http://{bound_host}:{bound_port}"
        output.info(f"chatops serving {bot.bot.name!r} on {base}", style="bold")
        output.info(f"  database:  {mask_url(settings.database_url)} ({describe_database(db)})")
        output.info(f"  AI:        {settings.ai_mode}")
        output.info(f"  health:    {base}/healthz  {base}/readyz")

    run_server(app, host=host, port=port, threads=threads, on_ready=banner, on_shutdown=db.dispose)
