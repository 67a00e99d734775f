"""``GET /healthz`` (the process is alive) and ``GET /readyz`` (it can do its job: database and schema)."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify

from chatops.db.migrate import head_revision, schema_revision
from chatops.db.sqlite_file import check_file
from chatops.errors import StorageError
from chatops.web.state import web_state

health = Blueprint("health", __name__)


@health.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@health.get("/readyz")
def readyz() -> tuple[Response, int]:
    """200 when the database answers (on SQLite: its file is still there and writable) and its schema is at
    head; 503 with the reasons otherwise."""
    state = web_state(current_app)
    reasons: list[str] = []
    try:
        check_file(state.db)  # SQLite: a deleted or read-only file is not ready (it would still answer queries)
        current = schema_revision(state.db)
        if current != _head():
            reasons.append(f"schema at {current or 'empty'}, head is {_head()}: run `chatops migrate`")
    except StorageError as exc:
        reasons.append(exc.message)
    reasons.extend(state.readiness_problems())
    warnings = {"warnings": notes} if (notes := state.readiness_notes()) else {}
    if reasons:
        return jsonify({"status": "unavailable", "reasons": reasons, **warnings}), 503
    return jsonify({"status": "ready", **warnings}), 200


_HEAD: list[str] = []


def _head() -> str:
    if not _HEAD:  # the migration scripts never change while the process runs
        _HEAD.append(head_revision())
    return _HEAD[0]
