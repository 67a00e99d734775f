"""Admin API authentication and authorisation: ``Authorization: Bearer <key>`` and :func:`requires`.

``@requires(Role.OPERATOR)`` on a view: a missing, malformed, unknown, expired or revoked key answers 401, a role
below the one named 403. The decorator keeps its role on the view (``view.required_role``) so the route table and
the OpenAPI document (``x-required-role``) say which role each route needs, and tests can try every role on every
route. Mutating calls (any method but GET/HEAD/OPTIONS) are written to the audit log with their outcome,
including a 403 refusal. The limiter (chatops.web.ratelimit) runs first: per key after authentication, per client
address for bad keys.

Client address: the socket's peer, or behind ``CHATOPS_TRUSTED_PROXY_HOPS`` reverse proxies the address that
the outermost trusted proxy put into ``X-Forwarded-For`` (the N-th from the right). Entries further left are
written by the client and never trusted.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, make_response, request

from chatops.db import audit
from chatops.db.api_keys import ApiKey, find_key, touch_key
from chatops.errors import ChatopsError
from chatops.web.state import web_state

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
LIMITER_EXTENSION = "chatops.api_limiter"


class Role(StrEnum):
    """What a key may do: each role may do everything the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return list(Role).index(self)


class ApiError(ChatopsError):
    """An admin API refusal: ``status`` and ``code`` go into the JSON error (chatops.web.errors)."""

    def __init__(
        self, status: int, code: str, message: str, *, hint: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.headers = headers or {}


@dataclass(frozen=True)
class Caller:
    """Who makes the current request: the key (None before authentication) and the client address."""

    key: ApiKey | None
    address: str

    @property
    def actor(self) -> str:
        return self.key.name if self.key else "anonymous"


def client_address(remote_addr: str | None, forwarded_for: str | None, *, trusted_hops: int) -> str:
    """The client's address, trusting ``trusted_hops`` proxies' ``X-Forwarded-For`` entries (see module doc)."""
    peer = remote_addr or "unknown"
    if trusted_hops <= 0 or not forwarded_for:
        return peer
    entries = [entry.strip() for entry in forwarded_for.split(",") if entry.strip()]
    return entries[-trusted_hops] if len(entries) >= trusted_hops else peer


def current_caller() -> Caller:
    """The caller of the request being served (set by :func:`requires`)."""
    caller = g.get("chatops_caller")
    assert isinstance(caller, Caller), "current_caller() outside a @requires view"
    return caller


def _bearer() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _authenticate(address: str) -> ApiKey:
    state = web_state(current_app)
    limiter = current_app.extensions.get(LIMITER_EXTENSION)
    if limiter is not None:
        limiter.check_bad_keys(address)  # 429 before the lookup: a brute force costs no database work
    token = _bearer()
    now = state.clock()
    key = find_key(state.db, token, now=now) if token else None
    if key is None:
        if limiter is not None:
            limiter.hit_bad_key(address)
        raise ApiError(
            401,
            "unauthorized",
            "missing API key" if token is None else "unknown, expired or revoked API key",
            hint="send `Authorization: Bearer <key>`; `chatops keys create` makes one",
            headers={"WWW-Authenticate": 'Bearer realm="chatops"'},
        )
    touch_key(state.db, key, now=now)
    if limiter is not None:
        limiter.check_key(key)
    return key


def requires(role: Role) -> Callable[[F], F]:
    """Allow the view to keys of ``role`` or above; audit it when it changes something (see module doc)."""

    def decorate(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            state = web_state(current_app)
            address = client_address(
                request.remote_addr,
                request.headers.get("X-Forwarded-For"),
                trusted_hops=state.settings.trusted_proxy_hops,
            )
            g.chatops_caller = Caller(None, address)
            key = _authenticate(address)
            g.chatops_caller = caller = Caller(key, address)
            mutating = request.method not in _READ_METHODS
            if Role(key.role).rank < role.rank:
                if mutating:
                    _audit(caller, "denied", status=403)
                raise ApiError(
                    403,
                    "forbidden",
                    f"this call needs the {role.value} role; the key {key.name!r} is {key.role}",
                    hint="use a key with that role (`chatops keys create --role …`)",
                )
            if not mutating:
                return view(*args, **kwargs)
            try:
                result = view(*args, **kwargs)
            except ApiError as exc:
                _audit(caller, "rejected", status=exc.status, message=exc.message)
                raise
            except ChatopsError as exc:
                _audit(caller, "rejected", message=exc.message)
                raise
            except Exception:
                _audit(caller, "failed", status=500)
                raise
            response = make_response(result)
            _audit(caller, "ok" if response.status_code < 400 else "rejected", status=response.status_code)
            return response

        guarded.required_role = role  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return decorate


def _audit(caller: Caller, outcome: audit.Outcome, *, status: int | None = None, message: str | None = None) -> None:
    state = web_state(current_app)
    details: dict[str, Any] = {"method": request.method}
    if status is not None:
        details["status"] = status
    if message is not None:
        details["message"] = message
    extra = g.get("chatops_audit_details")
    if extra:
        details.update(extra)
    audit.record(
        state.db,
        actor=caller.actor,
        api_key_id=caller.key.id if caller.key else None,
        action=request.endpoint or request.path,
        target=request.path,
        outcome=outcome,
        now=state.clock(),
        client_address=caller.address,
        details=details,
    )


def audit_details(**details: Any) -> None:
    """Add ``details`` to the audit entry of the current request (e.g. the stage a conversation was handed to)."""
    g.chatops_audit_details = {**(g.get("chatops_audit_details") or {}), **details}


def api_error_response(exc: ApiError) -> Response:
    """``exc`` in the JSON error shape, with its status and headers."""
    from chatops.web.errors import error_response

    response, status = error_response(exc.status, exc.code, exc.message, hint=exc.hint)
    response.status_code = status
    response.headers.update(exc.headers)
    return response


def init_app(app: Flask) -> None:
    """Register the handler that turns ApiError into the JSON error shape with its headers."""
    app.register_error_handler(ApiError, api_error_response)
