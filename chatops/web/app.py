"""The Flask app factory: ``create_app(settings, bot)``. Blueprints register the routes; nothing is global."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import Flask

from chatops.web import errors
from chatops.web.health import health
from chatops.web.state import EXTENSION, WebState

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.config.settings import Settings


def create_app(settings: Settings, bot: Any, *, db: sa.Engine | None = None) -> Flask:
    """A WSGI app for ``settings`` and ``bot``. ``db`` defaults to an engine for ``settings.database_url``."""
    from chatops.db.connect import create_db_engine

    app = Flask("chatops")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = WebState(settings=settings, bot=bot, db=db or create_db_engine(settings.database_url))
    app.extensions[EXTENSION] = state
    errors.init_app(app)
    app.register_blueprint(health)
    return app
