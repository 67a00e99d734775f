"""Request ids: every HTTP request gets one, and every log line written while it is handled carries it.

The id is the caller's ``X-Request-ID`` when it looks like one (nginx passes its ``$request_id``, 32 hex digits:
docs/deployment.md), else a new random one; it goes back to the caller in ``X-Request-ID`` so one id finds a
request in nginx's access log, chatops' log and a bug report. A WSGI middleware outside everything else, so the
webhook fast path (:class:`~chatops.web.webhooks.WebhookFront`) is covered as well as Flask.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from chatops.logs import log_context

# What may come in from outside: a log line must not be forged through it (no spaces, quotes or newlines).
_ACCEPTED = re.compile(r"[A-Za-z0-9._:-]{8,128}")
ENVIRON_KEY = "chatops.request_id"


def request_id_of(environ: dict[str, Any]) -> str:
    """The request id to use for ``environ``: the caller's ``X-Request-ID`` if acceptable, else a new one."""
    given = environ.get("HTTP_X_REQUEST_ID", "")
    return given if _ACCEPTED.fullmatch(given) else uuid.uuid4().hex


class RequestIds:
    """WSGI middleware: the request id in ``environ[ENVIRON_KEY]``, in the log context, and in the answer."""

    def __init__(self, app: Callable[..., Iterable[bytes]]) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request_id = environ[ENVIRON_KEY] = request_id_of(environ)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            headers.append(("X-Request-ID", request_id))
            return start_response(status, headers, exc_info)

        with log_context(request_id=request_id):
            return self.app(environ, start)


def init_app(app: Flask) -> None:
    """Wrap ``app.wsgi_app`` (call last: the middleware must be the outermost)."""
    app.wsgi_app = RequestIds(app.wsgi_app)  # type: ignore[method-assign]
