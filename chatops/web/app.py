"""The Flask app factory: ``create_app(settings, bot)``. Blueprints register the routes; nothing is global."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask

from chatops.metrics import Metrics
from chatops.web import console, errors, request_ids, webhooks
from chatops.web.health import health
from chatops.web.metrics import metrics
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
    from chatops.metrics.pool import export_pool
    from chatops.web import api
    from chatops.web.auth import LIMITER_EXTENSION
    from chatops.web.metrics import WebhookTimer
    from chatops.web.queue_metrics import QueueCollector
    from chatops.web.ratelimit import ApiLimiter

    app = api.create_openapi_app("chatops")
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
    state.metrics.add_collector(QueueCollector(state.db, clock=clock))
    export_pool(state.metrics, state.db)
    errors.init_app(app)
    app.register_blueprint(health)
    app.register_blueprint(metrics)
    api.init_app(app)
    app.extensions[LIMITER_EXTENSION] = ApiLimiter(
        settings.rate_limit_storage,
        per_key=settings.api_rate_limit,
        bad_keys=settings.api_bad_key_limit,
        on_refused=state.metrics.limited,
    )
    webhooks.init_app(app, state, store=_webhook_store(state))
    console.init_app(app, state)
    app.wsgi_app = WebhookTimer(app.wsgi_app, state.metrics)  # type: ignore[method-assign]
    request_ids.init_app(app)  # last: outside the webhook fast path too
    return app


def _webhook_store(state: WebState) -> webhooks.Store:
    """How webhooks are written: group commit (chatops.db.group_commit), on both databases.

    SQLite has one writer at a time; request threads racing for its lock (BEGIN IMMEDIATE, then the busy
    handler's sleeps) made the p99 600 ms. Group commit writes them one batch at a time: at 16 connections p99
    599 -> 22 ms and 1.23x the throughput (bench/webhooks setup, interleaved runs).

    On PostgreSQL every write costs a statement and a commit on both sides of the socket, whatever the number of
    messages it carries: written one per request, the backends spent ~500 us per acknowledgement, written in
    batches ~170 us (bench/README.md, issue 14). A request alone still writes at once; batches form only while a
    write is in flight.
    """
    from chatops.db.group_commit import GroupCommit

    return GroupCommit(state.db, on_batch=state.metrics.webhook_batch).store
