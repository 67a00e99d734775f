"""A WSGI entry for servers started on their own: ``gunicorn 'chatops.web.wsgi:create_app()'``.

Reads the settings the way every command does (environment, then ``.env``), sets up logging, loads the bot
definition and checks that the database schema is at head. It serves webhooks, health and metrics only: run
``chatops worker`` beside it (``chatops serve --server gunicorn`` runs the workers itself; see docs/deployment.md).

Raises ChatopsError (a bad setting, bot definition or schema) so the server refuses to start.
"""

from __future__ import annotations

from flask import Flask


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
