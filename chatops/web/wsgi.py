"""A WSGI entry for servers started on their own: ``gunicorn 'chatops.web.wsgi:create_app()'``.

Reads the settings the way every command does (environment, then ``.env``), sets up logging, loads the bot
definition and checks that the database schema is at head. It serves webhooks, health and metrics only: run
``chatops worker`` beside it (``chatops serve --server gunicorn`` runs the workers itself; see docs/deployment.md).

Raises ChatopsError (a bad setting, bot definition or schema) so the server refuses to start.

:func:`web_process_app` is the app of each web process that ``chatops serve --server gunicorn|granian`` starts
itself (the settings, schema and logging are the master's business there).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from flask import Flask

if TYPE_CHECKING:
    from chatops.config.settings import Settings


def create_app() -> Flask:
    """The app for the settings in the environment; one database pool per process (call it after the fork)."""
    from chatops.config.bot import load_bot
    from chatops.config.settings import load_settings
    from chatops.db.connect import check_connection, create_db_engine
    from chatops.db.migrate import ensure_schema_current
    from chatops.error_tracking import init_error_tracking
    from chatops.logs import configure_logging
    from chatops.web.app import create_app as create_flask_app

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    init_error_tracking(settings)
    bot = load_bot(settings.stages, templates_dir=settings.templates)
    db = create_db_engine(settings.database_url)
    check_connection(db)
    ensure_schema_current(db)
    return create_flask_app(settings, bot, db=db)


def web_process_app(
    settings: Settings,
    *,
    pool_size: int,
    insecure_skip_signature: bool,
    status_path: Path | None,
    status_of: str = "the background process (workers and sender)",
) -> Flask:
    """The app of one web process of ``serve --server gunicorn|granian``: the bot definition loaded from disk
    again, a pool of its own, and ``/readyz`` reading the status file the workers' process writes (``status_path``;
    None when this server runs no workers)."""
    from chatops.config.bot import load_bot
    from chatops.db.connect import create_db_engine
    from chatops.engine.status_file import StatusReader
    from chatops.web.app import create_app as create_flask_app
    from chatops.web.state import web_state

    app = create_flask_app(
        settings,
        load_bot(settings.stages, templates_dir=settings.templates),
        db=create_db_engine(settings.database_url, pool_size=pool_size),
        insecure_skip_signature=insecure_skip_signature,
    )
    if status_path is not None:
        reader = StatusReader(status_path, what=status_of)
        web_state(app).readiness_checks.append(reader.problems)
        web_state(app).readiness_warnings.append(reader.warnings)
    return app
