"""The admin API (``/api/v1``): conversations, handoff, bot, stats, keys and audit, with its OpenAPI 3.1 document
at ``/api/v1/openapi.json`` and a browsable page at ``/api/v1/swagger`` (Swagger UI served by chatops, no CDN).

flask-openapi3 reads the pydantic declarations in :mod:`chatops.web.api.models` to validate requests and to write
the document, so the two cannot drift. Every route is declared with :func:`chatops.web.api.routes.operation`
(role + validation + documentation). docs/api.md is the user's reference.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.models.info import Info
from flask_openapi3.openapi import OpenAPI
from pydantic import ValidationError

from chatops import __version__
from chatops.db.api_keys import KeyNotFoundError
from chatops.db.conversations import ConversationNotFoundError, InvalidCursorError
from chatops.engine.handoff import HandoffError, WindowClosedError
from chatops.engine.reload import ReloadWatch
from chatops.errors import ChatopsError, StorageError, TemplateError
from chatops.web import auth
from chatops.web.api.models import ErrorBody
from chatops.web.errors import error_response, storage_error_response
from chatops.web.state import web_state

PREFIX = "/api/v1"
RELOAD_WATCH = "chatops.reload_watch"
# Library errors the API answers with a status of their own; any other ChatopsError is a 400 with its message.
STATUS_OF: dict[type[ChatopsError], tuple[int, str]] = {
    ConversationNotFoundError: (404, "not_found"),
    KeyNotFoundError: (404, "not_found"),
    InvalidCursorError: (400, "invalid_cursor"),
    WindowClosedError: (409, "window_closed"),
    HandoffError: (400, "bad_request"),
    TemplateError: (422, "template_error"),
}


def validation_error(exc: ValidationError) -> Response:
    """422 in the one error shape, with each invalid field."""
    fields = [
        {"field": ".".join(str(part) for part in error["loc"]) or "(body)", "message": error["msg"]}
        for error in exc.errors(include_url=False)
    ]
    first = fields[0] if fields else {"field": "(request)", "message": "invalid"}
    response, _ = error_response(
        422,
        "invalid_request",
        f"{first['field']}: {first['message']}",
        hint=f"see {PREFIX}/openapi.json for what this call accepts",
        fields=fields,
    )
    response.status_code = 422
    return response


def create_openapi_app(import_name: str) -> OpenAPI:
    """The Flask app with the OpenAPI machinery (an ``OpenAPI`` is a ``Flask``)."""
    return OpenAPI(
        import_name,
        info=Info(title="chatops admin API", version=__version__),
        security_schemes={"bearer": {"type": "http", "scheme": "bearer", "description": "an API key"}},
        doc_prefix=PREFIX,
        doc_url="/openapi.json",
        validation_error_status=422,
        validation_error_model=ErrorBody,
        validation_error_callback=validation_error,
    )


def init_app(app: Flask) -> None:
    """Register the admin API's routes and error handling on ``app`` (made by :func:`create_openapi_app`)."""
    from chatops.web.api import admin, bot, conversations, handoff

    assert isinstance(app, OpenAPI)
    auth.init_app(app)
    api = APIBlueprint("api", __name__, url_prefix=PREFIX)
    for part in (conversations.api, handoff.api, bot.api, admin.api):
        api.register_api(part)
    watch = app.extensions[RELOAD_WATCH] = ReloadWatch(web_state(app).db, web_state(app).settings)

    @api.before_request
    def _follow_reloads() -> None:
        """A bot reload made by any process reaches this one at its next API call (at most one query per 2 s)."""
        fresh = watch.poll()
        if fresh is not None:
            web_state(app).bot = fresh

    @api.errorhandler(ChatopsError)
    def _library_error(exc: ChatopsError) -> Any:
        # This handler wins over the app's for every ChatopsError raised here, so it answers those two as they do.
        if isinstance(exc, auth.ApiError):
            return auth.api_error_response(exc)
        if isinstance(exc, StorageError):
            return storage_error_response(exc)
        status, code = STATUS_OF.get(type(exc), (400, "bad_request"))
        response, _ = error_response(status, code, exc.message, hint=exc.hint)
        response.status_code = status
        return response

    app.register_api(api)
