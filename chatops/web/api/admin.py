"""``/api/v1/keys`` and ``/api/v1/audit``: key management and the audit log, for admins."""

from __future__ import annotations

from datetime import timedelta

from flask import Response, current_app, jsonify
from flask_openapi3.blueprint import APIBlueprint

from chatops.db import api_keys, audit
from chatops.web.api import models
from chatops.web.api.routes import operation
from chatops.web.auth import Role, audit_details
from chatops.web.state import web_state

api = APIBlueprint("admin", __name__)


def key_info(key: api_keys.ApiKey, now: object) -> models.KeyInfo:
    assert hasattr(now, "tzinfo")
    return models.KeyInfo(
        name=key.name,
        prefix=key.prefix,
        role=key.role,
        status=key.status(now),  # type: ignore[arg-type]
        created_at=key.created_at,
        last_used_at=key.last_used_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
    )


def _days(days: int | None) -> timedelta | None:
    return timedelta(days=days) if days else None


@operation(api, "get", "/keys", Role.ADMIN, answer=models.KeyList)
def list_keys_view() -> Response:
    """List API keys (never their secrets)."""
    state = web_state(current_app)
    now = state.clock()
    items = [key_info(key, now) for key in api_keys.list_keys(state.db)]
    return jsonify(models.KeyList(items=items).model_dump(mode="json"))


@operation(api, "post", "/keys", Role.ADMIN, answer=models.KeySecret, status=201)
def create_key_view(body: models.KeyCreate) -> tuple[Response, int]:
    """Create an API key; the answer holds the key itself, once."""
    state = web_state(current_app)
    now = state.clock()
    audit_details(name=body.name, role=body.role)
    new = api_keys.create_key(state.db, name=body.name, role=body.role, now=now, expires_in=_days(body.expires_in_days))
    return jsonify(models.KeySecret(key=key_info(new.key, now), secret=new.secret).model_dump(mode="json")), 201


@operation(api, "post", "/keys/<name>/revoke", Role.ADMIN, answer=models.KeyInfo)
def revoke_key_view(path: models.KeyPath, **_url: object) -> Response:
    """Revoke an API key: it gets 401 from now on."""
    state = web_state(current_app)
    now = state.clock()
    key = api_keys.revoke_key(state.db, path.name, now=now)
    return jsonify(key_info(key, now).model_dump(mode="json"))


@operation(api, "post", "/keys/<name>/rotate", Role.ADMIN, answer=models.KeySecret)
def rotate_key_view(path: models.KeyPath, body: models.KeyRotate, **_url: object) -> Response:
    """Give an API key a new secret; the old one stops working at once."""
    state = web_state(current_app)
    now = state.clock()
    new = api_keys.rotate_key(state.db, path.name, now=now, expires_in=_days(body.expires_in_days))
    return jsonify(models.KeySecret(key=key_info(new.key, now), secret=new.secret).model_dump(mode="json"))


@operation(api, "get", "/audit", Role.ADMIN, answer=models.AuditList)
def audit_view(query: models.AuditQuery) -> Response:
    """The audit log, newest first: every mutating call with its key, target, outcome and client address."""
    entries = audit.list_entries(
        web_state(current_app).db, limit=query.limit, before_id=query.before, actor=query.actor, action=query.action
    )
    items = [models.AuditEntry.model_validate(entry, from_attributes=True) for entry in entries]
    return jsonify(models.AuditList(items=items).model_dump(mode="json"))
