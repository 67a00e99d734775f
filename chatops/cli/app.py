"""The ``chatops`` command: global options, one error boundary, and the commands.

Each command lives in its own module and imports its heavy dependencies (SQLAlchemy, Flask, OpenAI) inside the
function body, so that ``chatops --help`` stays fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from chatops import __version__
from chatops.cli import output
from chatops.errors import ChatopsError, ConfigError


class _ErrorBoundary(TyperGroup):
    """Turns our own errors into ``Error: …`` + ``Hint: …`` on stderr; anything else is a bug: traceback."""

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # typer.Context is its click Context
        try:
            return super().invoke(ctx)
        except ChatopsError as exc:
            output.error(exc.message, hint=exc.hint)
            raise typer.Exit(2 if isinstance(exc, ConfigError) else 1) from None


app = typer.Typer(
    cls=_ErrorBoundary,
    name="chatops",
    help="Run a chatbot business on WhatsApp and Facebook Messenger.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"chatops {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    ctx: typer.Context,
    stages: Annotated[
        Path | None, typer.Option("--stages", help="Bot definition (default: $CHATOPS_STAGES or stages.yaml).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option("--database-url", help="SQLAlchemy URL (default: $CHATOPS_DATABASE_URL or sqlite:///chatops.db)."),
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: INFO).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run a chatbot business on WhatsApp and Facebook Messenger.

    Settings come from CHATOPS_* environment variables (or .env); these options override them.
    """
    ctx.obj = {
        "stages": stages,
        "database_url": database_url,
        "log_level": log_level.upper() if log_level else None,
    }


def settings_from(ctx: typer.Context, **overrides: Any) -> Any:
    """The process settings: environment and ``.env``, then global flags, then the command's ``overrides``.

    Also sets up logging at the configured level. Raises ConfigError (exit 2) for a malformed value.
    """
    from chatops.config.settings import load_settings

    root = ctx.find_root()
    given = {**(root.obj or {})}
    given.update({key: value for key, value in overrides.items() if value is not None})
    settings = load_settings(**given)
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if settings.log_level != "DEBUG":  # Alembic narrates every step at INFO; `chatops migrate` prints the summary
        logging.getLogger("alembic").setLevel(logging.WARNING)
    return settings


def _register() -> None:
    from chatops.cli.lint_templates import lint_templates_command
    from chatops.cli.migrate import migrate_command
    from chatops.cli.serve import serve_command, worker_command
    from chatops.cli.simulate import simulate_command

    app.command("serve")(serve_command)
    app.command("worker")(worker_command)
    app.command("migrate")(migrate_command)
    app.command("lint-templates")(lint_templates_command)
    app.command("simulate")(simulate_command)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
