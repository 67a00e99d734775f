"""The operator console (``/console``): server-rendered pages for a shop's staff, with their own sessions.

Pages are Jinja2 templates (one base layout) with forms that work without JavaScript; ``static/console.js``
adds live updates (polling HTML fragments) and keyboard shortcuts. Every asset is served from ``static/``.

Sessions: a random token in Flask's signed cookie (HttpOnly, SameSite=Lax, path /console, Secure over HTTPS); its
hash, last use and revocation live in ``staff_sessions`` (chatops.db.staff), so an idle session expires and a
logout ends it on the server. CSRF: Flask-WTF checks the token of every POST under /console. Actions call the
same library functions as the admin API (chatops.engine.handoff, chatops.db.api_keys …) and are written to the
audit log as ``staff:<email>``. docs/console.md is the user's reference.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask

from chatops.web.state import WebState

PREFIX = "/console"
IDLE_TIMEOUT = timedelta(minutes=30)


def init_app(app: Flask, state: WebState, *, idle_timeout: timedelta = IDLE_TIMEOUT) -> None:
    """Register the console's blueprint, its session cookie and CSRF protection on ``app``."""
    from flask_wtf.csrf import CSRFProtect

    from chatops.web.console import actions, admin, pages, sessions

    sessions.configure(app, state, idle_timeout=idle_timeout)
    app.config["WTF_CSRF_CHECK_DEFAULT"] = False  # only console forms carry a token; webhooks and the API do not
    app.config["WTF_CSRF_TIME_LIMIT"] = None  # the token lives as long as the session, which expires on its own
    app.extensions["chatops.console.csrf"] = CSRFProtect(app)
    blueprint = sessions.new_blueprint()
    pages.register(blueprint)
    actions.register(blueprint)
    admin.register(blueprint)
    app.register_blueprint(blueprint, url_prefix=PREFIX)
