"""Console sessions: login (rate limited), logout, logout everywhere, and :func:`staff_required` for views.

``staff_required(Role.OPERATOR)`` on a view: no live session redirects to the login page (a fragment request gets
401), a role below the one named answers 403. The role is kept on the view (``view.required_role``) so tests can
try every role on every route. POSTs are written to the audit log with the staff member as ``staff:<email>``.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError
from itsdangerous import URLSafeTimedSerializer
from werkzeug.wrappers import Response as BaseResponse

from chatops.db import audit, staff
from chatops.db.conversations import ConversationNotFoundError
from chatops.errors import ChatopsError
from chatops.web.auth import Role, client_address
from chatops.web.console.login_limits import LoginLimiter
from chatops.web.state import WebState, web_state

F = TypeVar("F", bound=Callable[..., Any])
CONFIG = "chatops.console"
COOKIE = "chatops_console"


class ConsoleConfig:
    """Per-app console configuration kept in ``app.extensions``."""

    def __init__(self, state: WebState, idle_timeout: timedelta) -> None:
        self.state = state
        self.idle_timeout = idle_timeout
        self.limiter = LoginLimiter(state.settings.rate_limit_storage)


class ConsoleSessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the signing key read from the database on first need.

    Requests without the console cookie (webhooks, the API) never touch the key, so they do not need the
    console's table; every process of a deployment signs with the same stored key.
    """

    def __init__(self, state: WebState) -> None:
        self._state = state
        self._lock = threading.Lock()

    def secret(self, app: Flask) -> str:
        with self._lock:
            if not app.secret_key:
                app.secret_key = staff.console_secret(self._state.db)
            return str(app.secret_key)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        return URLSafeTimedSerializer(
            self.secret(app),
            salt=self.salt,
            serializer=self.serializer,
            signer_kwargs={"key_derivation": self.key_derivation, "digest_method": hashlib.sha256},
        )

    def open_session(self, app: Flask, request: Request) -> Any:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        # Secure over HTTPS, including behind a trusted TLS proxy (nginx sets X-Forwarded-Proto).
        forwarded = request.headers.get("X-Forwarded-Proto", "") if self._state.settings.trusted_proxy_hops else ""
        return bool(app.config.get("SESSION_COOKIE_SECURE")) or request.is_secure or forwarded == "https"


def configure(app: Flask, state: WebState, *, idle_timeout: timedelta) -> None:
    """Session cookie settings and the console's configuration."""
    app.extensions[CONFIG] = ConsoleConfig(state, idle_timeout)
    app.session_interface = ConsoleSessionInterface(state)
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE,
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
    )


def config() -> ConsoleConfig:
    value = current_app.extensions[CONFIG]
    assert isinstance(value, ConsoleConfig)
    return value


def address() -> str:
    state = web_state(current_app)
    return client_address(
        request.remote_addr, request.headers.get("X-Forwarded-For"), trusted_hops=state.settings.trusted_proxy_hops
    )


def current_staff() -> staff.StaffSession | None:
    """The live session of this request (None when logged out, expired or revoked)."""
    if "staff_session" in g:
        return g.staff_session  # type: ignore[no-any-return]
    token = session.get("t")
    found = None
    if isinstance(token, str):
        state = web_state(current_app)
        found = staff.find_session(state.db, token, now=state.clock(), idle_timeout=config().idle_timeout)
        if found is None:
            session.clear()
    g.staff_session = found
    return found


def actor() -> str:
    live = current_staff()
    return f"staff:{live.account.email}" if live else "anonymous"


def record(action: str, target: str | None, outcome: audit.Outcome, **details: Any) -> None:
    """Write one audit entry for the current staff member."""
    state = web_state(current_app)
    audit.record(
        state.db,
        actor=actor(),
        action=action,
        target=target,
        outcome=outcome,
        now=state.clock(),
        client_address=address(),
        details=details or None,
    )


def _fragment() -> bool:
    return request.headers.get("X-Console-Fragment") == "1"


def staff_required(role: Role) -> Callable[[F], F]:
    """Allow the view to staff of ``role`` or above (see the module docstring)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            live = current_staff()
            if live is None:
                if _fragment():
                    abort(401)
                return redirect(url_for("console.login", next=request.full_path.rstrip("?")))
            if Role(live.account.role).rank < role.rank:
                if request.method == "POST":
                    record(f"console.{view.__name__}", request.path, "denied", role=live.account.role)
                return (
                    render_template(
                        "console/error.html",
                        title="Not allowed",
                        message=f"This needs the {role.value} role; you are {live.account.role}.",
                    ),
                    403,
                )
            return view(*args, **kwargs)

        guarded.required_role = role  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def _safe_next(target: str | None) -> str:
    """Only a path inside the console: never an outside address (open redirect)."""
    if target and target.startswith(PREFIX_PATH) and not urlsplit(target).netloc and "\\" not in target:
        return target
    return url_for("console.inbox")


PREFIX_PATH = "/console"


def login() -> BaseResponse | tuple[str, int] | str:
    """GET: the login form. POST: check the password (rate limited), start a session, go on."""
    if request.method == "GET":
        if current_staff() is not None:
            return redirect(url_for("console.inbox"))
        return render_template("console/login.html", next=request.args.get("next", ""), email="")
    state = web_state(current_app)
    email = request.form.get("email", "").strip().lower()
    password = request.form.get("password", "")
    who = address()
    retry = config().limiter.blocked(who, email)
    if retry is not None:
        audit.record(
            state.db,
            actor=f"login:{email}"[:128],
            action="console.login",
            target=PREFIX_PATH,
            outcome="denied",
            now=state.clock(),
            client_address=who,
            details={"reason": "rate limited"},
        )
        response = make_response(
            render_template(
                "console/login.html",
                next=request.form.get("next", ""),
                email=email,
                error=f"Too many login attempts. Try again in {retry} seconds.",
            ),
            429,
        )
        response.headers["Retry-After"] = str(retry)
        return response
    account = staff.authenticate(state.db, email, password, now=state.clock())
    if account is None:
        config().limiter.hit(who, email)
        audit.record(
            state.db,
            actor=f"login:{email}"[:128],
            action="console.login",
            target=PREFIX_PATH,
            outcome="rejected",
            now=state.clock(),
            client_address=who,
        )
        return (
            render_template(
                "console/login.html",
                next=request.form.get("next", ""),
                email=email,
                error="Wrong email or password, or the account is disabled.",
            ),
            401,
        )
    session.clear()
    session["t"] = staff.start_session(state.db, account, now=state.clock(), client_address=who)
    g.pop("staff_session", None)
    audit.record(
        state.db,
        actor=f"staff:{account.email}",
        action="console.login",
        target=PREFIX_PATH,
        outcome="ok",
        now=state.clock(),
        client_address=who,
    )
    return redirect(_safe_next(request.form.get("next")))


def logout() -> BaseResponse:
    """End this session on the server and drop the cookie."""
    state = web_state(current_app)
    token = session.get("t")
    if current_staff() is not None and isinstance(token, str):
        record("console.logout", PREFIX_PATH, "ok")
        staff.end_session(state.db, token, now=state.clock())
    session.clear()
    return redirect(url_for("console.login"))


def logout_everywhere() -> BaseResponse:
    """End every session of the current staff member (all browsers and devices)."""
    live = current_staff()
    assert live is not None
    state = web_state(current_app)
    count = staff.end_all_sessions(state.db, live.account.email, now=state.clock())
    record("console.logout_everywhere", PREFIX_PATH, "ok", sessions=count)
    session.clear()
    return redirect(url_for("console.login"))


def new_blueprint() -> Blueprint:
    """The console's blueprint with login/logout, CSRF on every POST, and its error pages."""
    from chatops.web.console import PREFIX

    blueprint = Blueprint(
        "console", __name__, template_folder="templates", static_folder="static", static_url_path="/static"
    )
    assert PREFIX == PREFIX_PATH

    @blueprint.before_request
    def _before() -> None:
        from chatops.web.api import RELOAD_WATCH

        watch = current_app.extensions.get(RELOAD_WATCH)
        fresh = watch.poll() if watch is not None else None
        if fresh is not None:  # a bot reload made by any process: stages and template as the API sees them
            web_state(current_app).bot = fresh
        interface = current_app.session_interface
        if isinstance(interface, ConsoleSessionInterface):
            interface.secret(current_app)  # Flask-WTF signs its tokens with the app's secret key
        if request.method == "POST":
            current_app.extensions["chatops.console.csrf"].protect()

    @blueprint.errorhandler(CSRFError)
    def _csrf_refused(exc: CSRFError) -> tuple[str, int]:
        return render_template("console/error.html", title="Form expired", message=exc.description), 400

    @blueprint.errorhandler(ChatopsError)
    def _library_error(exc: ChatopsError) -> tuple[str, int]:
        if isinstance(exc, ConversationNotFoundError):
            return render_template("console/error.html", title="Not found", message=exc.message), 404
        message = exc.message + (f" {exc.hint}" if exc.hint else "")
        return render_template("console/error.html", title="Not done", message=message), 400

    @blueprint.context_processor
    def _globals() -> dict[str, Any]:
        from chatops.web.console.pages import waited, waiting_count

        return {"staff": current_staff, "waiting_count": waiting_count, "waited": waited}

    @blueprint.app_template_filter("when")
    def _when(value: datetime | None) -> str:
        """A time as staff read it: UTC, to the minute (the title attribute keeps the exact one where needed)."""
        return value.strftime("%Y-%m-%d %H:%M UTC") if value is not None else ""

    @blueprint.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
        return response

    blueprint.add_url_rule("/login", "login", login, methods=["GET", "POST"])
    blueprint.add_url_rule("/logout", "logout", logout, methods=["POST"])
    blueprint.add_url_rule(
        "/logout-everywhere", "logout_everywhere", staff_required(Role.VIEWER)(logout_everywhere), methods=["POST"]
    )
    return blueprint
