"""The Flask app factory: ``create_app(settings, bot)``. Blueprints register the routes; nothing is global."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask

from chatops.web import errors, webhooks
from chatops.web.health import health
from chatops.web.metrics import Metrics, metrics
from chatops.web.state import EXTENSION, WebState, utc_now

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.config.settings import Settings


def create_app(
    settings: Settings,
    bot: Any,
    *,
    db: sa.Engine | None = None,
    clock: Callable[[], datetime] = utc_now,
    insecure_skip_signature: bool = False,
) -> Flask:
    """A WSGI app for ``settings`` and ``bot``; ``db`` defaults to an engine for ``settings.database_url``.

    ``insecure_skip_signature`` accepts unsigned webhooks (development only; ``serve`` warns loudly).
    """
    from chatops.db.connect import create_db_engine

    app = Flask("chatops")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    state = WebState(
        settings=settings,
        bot=bot,
        db=db or create_db_engine(settings.database_url),
        metrics=Metrics(),
        clock=clock,
        insecure_skip_signature=insecure_skip_signature,
    )
    app.extensions[EXTENSION] = state
    errors.init_app(app)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    webhooks.init_app(app, state, store=_webhook_store(state))
    return app


def _webhook_store(state: WebState) -> webhooks.Store:
    """How webhooks are written: one transaction per request (chatops.db.ingest)."""
    from chatops.db.ingest import store_events

    return functools.partial(store_events, state.db)
