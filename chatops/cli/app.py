"""The ``chatops`` command: global options, one error boundary, and the commands.

Each command lives in its own module and imports its heavy dependencies (SQLAlchemy, Flask, OpenAI) inside the
function body, so that ``chatops --help`` stays fast.

The global options are declared once, on :func:`main_options`. Every command accepts them too (``chatops simulate
--stages x`` as well as ``chatops --stages x simulate``): the group copies those declarations onto each command,
where a value given after the command goes over the one given before it.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperGroup

from chatops import __version__
from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser
from chatops.errors import ChatopsError, ConfigError

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.config.settings import Settings

GLOBAL_OPTIONS_PANEL = "Global options (also accepted before the command)"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
LOG_FORMATS = ("text", "json")


def _also_on_commands(param: Any) -> Any:
    """A command's copy of the global option ``param``: not passed to the command function; its value, when given,
    goes over the one given before the command (in the root context's ``obj``, which ``settings_from`` reads)."""
    own = copy.copy(param)
    own.name = f"global_{param.name}"  # apart from the command's own parameters (lint-templates has a STAGES)
    original = param.callback  # --version prints and exits

    def remember(ctx: typer.Context, this: Any, value: Any) -> Any:
        if original is not None:
            value = original(ctx, this, value)
        root = ctx.find_root()
        if value is not None and param.name in (root.obj or {}):
            root.obj = {**root.obj, param.name: value}
        return value

    own.callback = remember
    own.expose_value = False
    own.rich_help_panel = GLOBAL_OPTIONS_PANEL
    return own


class _ErrorBoundary(TyperGroup):
    """Turns our own errors into ``Error: …`` + ``Hint: …`` on stderr; anything else is a bug: traceback.

    Also gives every command the group's own options (the global options), listed in their help under
    ``GLOBAL_OPTIONS_PANEL``.
    """

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        shared = [param for param in self.params if param.name and param.name != "help"]
        commands = list(self.commands.values())
        for group in [command for command in commands if isinstance(command, TyperGroup)]:
            commands.extend(group.commands.values())  # `chatops keys list --database-url …` too
        for command in commands:
            taken = {opt for param in command.params for opt in param.opts}
            clash = taken.intersection(opt for param in shared for opt in param.opts)
            assert not clash, f"{command.name} redefines the global options {sorted(clash)}"
            command.params.extend(_also_on_commands(param) for param in shared)

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
        str | None,
        typer.Option(
            "--log-level",
            parser=choice_parser(LOG_LEVELS),
            metavar=choice_metavar(LOG_LEVELS),
            help="Log level, any case (default: $CHATOPS_LOG_LEVEL or INFO).",
        ),
    ] = None,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            parser=choice_parser(LOG_FORMATS),
            metavar=choice_metavar(LOG_FORMATS),
            help="Log lines as text or one JSON object per line (default: $CHATOPS_LOG_FORMAT or text).",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Run a chatbot business on WhatsApp and Facebook Messenger.

    Settings come from CHATOPS_* environment variables (or .env); these options override them. They may also be
    given after the command, where they win over the same option given before it.
    """
    ctx.obj = {"stages": stages, "database_url": database_url, "log_level": log_level, "log_format": log_format}


def database_engine(ctx: typer.Context, *, settings: Settings | None = None) -> sa.Engine:
    """An engine with one connection: what a one-shot command (keys, users, prune …) needs; the caller disposes it.

    On the database of ``settings``, or of the settings read for it from ``ctx`` (``settings_from``: database URL
    and log level) when the command has not read its own.
    """
    from chatops.db.connect import create_db_engine

    if settings is None:
        settings = settings_from(ctx, uses=("database_url", "log_level"))
    return create_db_engine(settings.database_url, pool_size=1)


def settings_from(ctx: typer.Context, *, uses: Collection[str] | None = None, **overrides: Any) -> Settings:
    """The process settings: environment and ``.env``, then global flags, then the command's ``overrides``.

    ``uses`` names the settings the command needs (default: all): a malformed value of another one is no error.
    Warns on stderr about ``CHATOPS_*`` names that are no setting, then sets up logging (chatops.logs: level,
    format, library loggers, URL redaction). Raises ConfigError (exit 2) for a malformed value.
    """
    from chatops.config.settings import configuration_warnings, load_settings
    from chatops.error_tracking import init_error_tracking
    from chatops.logs import configure_logging

    root = ctx.find_root()
    given = {**(root.obj or {})}
    given.update({key: value for key, value in overrides.items() if value is not None})
    for warning in configuration_warnings():
        output.warning(warning)
    labels = {name: "--" + name.replace("_", "-") for name in given}  # every override comes from a flag
    settings = load_settings(uses=None if uses is None else (*uses, "log_format"), labels=labels, **given)
    configure_logging(settings.log_level, settings.log_format)
    init_error_tracking(settings)
    return settings


def _register() -> None:
    from chatops.cli.audit import audit_command
    from chatops.cli.backup import backup_command
    from chatops.cli.conversations import conversations_app
    from chatops.cli.doctor import doctor_command
    from chatops.cli.export import export_command
    from chatops.cli.forget import forget_command
    from chatops.cli.keys import keys_app
    from chatops.cli.lint_templates import lint_templates_command
    from chatops.cli.migrate import migrate_command
    from chatops.cli.prune import prune_command
    from chatops.cli.replay import replay_command
    from chatops.cli.serve import serve_command, worker_command
    from chatops.cli.simulate import simulate_command
    from chatops.cli.test import conversation_tests_command
    from chatops.cli.users import users_app

    app.command("serve")(serve_command)
    app.command("worker")(worker_command)
    app.command("migrate")(migrate_command)
    app.command("lint-templates")(lint_templates_command)
    app.command("simulate")(simulate_command)
    app.command("prune")(prune_command)
    app.command("forget")(forget_command)
    app.command("audit")(audit_command)
    app.command("doctor")(doctor_command)
    app.command("backup")(backup_command)
    app.add_typer(keys_app)
    app.add_typer(conversations_app)
    app.command("test")(conversation_tests_command)
    app.command("replay")(replay_command)
    app.command("export")(export_command)
    app.add_typer(users_app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
