"""``GET /metrics``: the Prometheus text format of the app's :class:`~chatops.metrics.Metrics`.

Also served by ``chatops worker``'s own listener (:func:`metrics_app`), with the same rule on who may read.

Who may read them (the counters tell traffic, error rates and which channels run): with
``CHATOPS_METRICS_TOKEN`` set, a request that sends ``Authorization: Bearer <token>``; without it, only a client
on the same host (loopback) that did not come through a proxy (no ``X-Forwarded-For``/``Forwarded`` header).
Anyone else gets 401/403 in the JSON error shape.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Request, Response, current_app, request
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from chatops.channels.events import CHANNELS
from chatops.web import errors
from chatops.web.errors import error_response
from chatops.web.state import web_state

if TYPE_CHECKING:
    from pydantic import SecretStr

    from chatops.metrics import Metrics

metrics = Blueprint("metrics", __name__)


@metrics.get("/metrics")
def export() -> Response | tuple[Response, int]:
    """The Prometheus text exposition format, to the readers :func:`refusal` lets through."""
    state = web_state(current_app)
    return _answer(state.metrics, state.settings.metrics_token)


def metrics_app(metrics: Metrics, token: SecretStr | None) -> Flask:
    """A WSGI app that serves only ``GET /metrics`` of ``metrics`` (``chatops worker``'s listener), readable as
    the server's ``/metrics`` is (``token``: ``CHATOPS_METRICS_TOKEN``); anything else is a JSON 404."""
    app = Flask("chatops.worker_metrics")
    errors.init_app(app)
    app.add_url_rule("/metrics", "metrics", lambda: _answer(metrics, token))
    return app


def _answer(metrics: Metrics, token: SecretStr | None) -> Response | tuple[Response, int]:
    refused = refusal(request, token.get_secret_value() if token is not None else None)
    if refused is not None:
        response, status = error_response(*refused)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="chatops metrics"'
        return response, status
    # content_type, not mimetype: Flask appends "; charset=utf-8" to a mimetype, and this one already has it.
    return Response(generate_latest(metrics.exported), content_type=CONTENT_TYPE_LATEST)


def refusal(req: Request, token: str | None) -> tuple[int, str, str] | None:
    """None when ``req`` may read the metrics, else (status, code, message) for the error answer."""
    if token:
        given = req.headers.get("Authorization", "")
        scheme, _, credentials = given.partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(credentials.strip().encode(), token.encode()):
            return None
        return 401, "unauthorized", "/metrics needs Authorization: Bearer <CHATOPS_METRICS_TOKEN>"
    if _loopback(req.remote_addr) and not ("X-Forwarded-For" in req.headers or "Forwarded" in req.headers):
        return None
    return 403, "forbidden", "/metrics answers only on this host; set CHATOPS_METRICS_TOKEN to scrape it remotely"


def _loopback(address: str | None) -> bool:
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:  # a Unix socket, or a server that reports no address
        return False
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None  # ::ffff:127.0.0.1 on a :: socket
    return (mapped or ip).is_loopback


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_WEBHOOKS = "/webhooks/"


class WebhookTimer:
    """WSGI middleware: counts every webhook POST by channel and status and times it until its answer is ready.

    Outside the webhook code (which answers a stored webhook without Flask, see
    :class:`chatops.web.webhooks.WebhookFront`), so both of its paths and every refusal are counted alike. An
    unknown channel name in the path is counted as ``other`` (the label stays bounded).
    """

    def __init__(self, app: WSGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") != "POST" or not path.startswith(_WEBHOOKS):
            return self.app(environ, start_response)
        name = path[len(_WEBHOOKS) :]
        channel = name if name in CHANNELS else "other"
        started = time.perf_counter()
        status = 500  # what the server answers when the app raises

        def recording_start_response(status_line: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, recording_start_response)
        finally:
            self.metrics.webhook_answered(channel, status, time.perf_counter() - started)
