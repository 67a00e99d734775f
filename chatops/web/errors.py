"""One JSON error shape for every HTTP error: ``{"error": {"code": …, "message": …, "hint": …}}``.

``hint`` says how to fix it, or is null. The admin API adds ``fields`` to 422 answers (chatops.web.api.errors).
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from chatops.errors import StorageError, WebhookError

log = logging.getLogger(__name__)


def error_response(
    status: int, code: str, message: str, *, hint: str | None = None, **extra: object
) -> tuple[Response, int]:
    """The JSON error body with ``status``; ``extra`` adds keys beside code, message and hint."""
    return jsonify({"error": {"code": code, "message": message, "hint": hint, **extra}}), status


def storage_error_response(exc: StorageError) -> tuple[Response, int]:
    """503: the database is unavailable (logged once here)."""
    log.error("database unavailable: %s", exc.message)
    return error_response(503, "database_unavailable", "the database is unavailable; retry later")


def init_app(app: Flask) -> None:
    """Register the handlers: HTTP errors keep their status, webhook refusals theirs, storage → 503, bugs → 500."""

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, code, exc.description or exc.name or "error")

    @app.errorhandler(WebhookError)
    def _webhook(exc: WebhookError) -> tuple[Response, int]:
        return error_response(exc.status, "webhook_rejected", exc.message)

    app.register_error_handler(StorageError, storage_error_response)

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
