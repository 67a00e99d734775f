"""Optional error tracking with Sentry (``CHATOPS_SENTRY_DSN``; the official SDK, ``pip install chatops[sentry]``).

:func:`init_error_tracking` starts the SDK once per process when a DSN is set: errors logged at ERROR (a turn that
failed unexpectedly, a dead thread, an unhandled request error) and unhandled exceptions become Sentry events.
Nothing personal leaves the machine (:func:`scrub_event`, the SDK's ``before_send``): no request bodies, cookies,
headers, query strings, local variables or user data; every string left (messages, exception values, breadcrumbs)
has URLs redacted as in the logs, runs of 7+ digits (phone numbers, WhatsApp and Messenger user ids) masked, and
the values of chatops' secrets removed. Events carry the ``request_id`` and ``conversation_id`` of the log context
as tags.

Raises ConfigError when a DSN is set and the SDK is not installed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from chatops.config.settings import Settings
from chatops.errors import ConfigError
from chatops.logs import current_log_context, redact

_DIGITS = re.compile(r"\+?\d{7,}")
# Request headers that say nothing about a person or a secret; every other header is dropped.
_KEPT_HEADERS = frozenset({"content-type", "content-length", "user-agent", "x-request-id"})


def _secrets(settings: Settings) -> list[str]:
    values = []
    for name, field in Settings.model_fields.items():
        value = getattr(settings, name)
        if "SecretStr" in repr(field.annotation) and value is not None and value.get_secret_value():
            values.append(value.get_secret_value())
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with secrets removed, URLs redacted (query strings, passwords) and long digit runs masked."""
    for secret in secrets:
        text = text.replace(secret, "[secret]")
    return _DIGITS.sub(lambda match: match.group(0)[:3] + "…", redact(text))


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, dict):
        return {key: _scrub(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(item, secrets) for item in value]
    return value


def scrub_event(event: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
    """The event as it may leave the machine (see the module docstring); adds the log context as tags."""
    event.pop("user", None)
    event.pop("server_name", None)
    request = event.get("request")
    if isinstance(request, dict):
        headers = request.get("headers") or {}
        event["request"] = {
            "method": request.get("method"),
            "url": redact(str(request.get("url", ""))).split("?", 1)[0],
            "headers": {k: v for k, v in headers.items() if str(k).lower() in _KEPT_HEADERS},
        }
    for exception in (event.get("exception") or {}).get("values") or []:
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            frame.pop("vars", None)
    scrubbed: dict[str, Any] = _scrub(event, secrets)
    tags = scrubbed.setdefault("tags", {})  # after the scrub: ids are not personal, and digits are their point
    for name, value in current_log_context().items():
        tags.setdefault(name, str(value))
    return scrubbed


def init_error_tracking(settings: Settings, *, transport: Any = None) -> bool:
    """Start Sentry for this process when ``CHATOPS_SENTRY_DSN`` is set (a second call replaces the first).

    ``transport`` replaces the SDK's HTTP transport (tests pass the SDK's Transport subclass that keeps events).
    Returns whether Sentry runs. Raises ConfigError when the SDK is missing.
    """
    if settings.sentry_dsn is None or not settings.sentry_dsn.get_secret_value():
        return False
    try:
        import sentry_sdk
    except ImportError:
        raise ConfigError(
            "CHATOPS_SENTRY_DSN is set but the Sentry SDK is not installed",
            hint="pip install 'chatops[sentry]' (or unset CHATOPS_SENTRY_DSN)",
        ) from None
    from chatops import __version__

    secrets = _secrets(settings)
    options: dict[str, Any] = {
        "dsn": settings.sentry_dsn.get_secret_value(),
        "release": f"chatops@{__version__}",
        "max_request_body_size": "never",
        "before_send": lambda event, _hint: scrub_event(event, secrets),
        "before_breadcrumb": lambda crumb, _hint: _scrub(crumb, secrets),
        "traces_sample_rate": 0.0,
    }
    options.update(_sdk_options(sentry_sdk.VERSION))
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(**options)
    return True


def _sdk_options(version: str) -> dict[str, Any]:
    """What differs between the SDK's majors (the extra allows either): error log lines become events, and the
    SDK's own collection is off where it could carry personal data (frame locals: messages, phone numbers,
    tokens; user and request details, AI prompts and answers, SQL parameters).

    SDK 2 sends ``logging`` errors as events by default and has ``include_local_variables``. SDK 3 enables the
    logging integration only when asked (and its ``level`` then means Sentry Logs, which chatops does not send),
    and replaced ``include_local_variables`` and ``send_default_pii`` by ``data_collection``, whose defaults
    collect user details.
    """
    if int(version.split(".")[0]) < 3:
        return {"include_local_variables": False}
    from sentry_sdk.integrations.logging import LoggingIntegration

    off = {"mode": "off"}
    return {
        "integrations": [LoggingIntegration(level=None, event_level=logging.ERROR, breadcrumb_level=logging.INFO)],
        "data_collection": {
            "stack_frame_variables": False,
            "user_info": False,
            "cookies": off,
            "http_headers": {"request": off},
            "url_query_params": off,
            "http_bodies": [],
            "gen_ai": {"inputs": False, "outputs": False},
            "mcp": {"inputs": False, "outputs": False},
            "graphql": {"document": False, "variables": False},
            "database_query_data": False,
        },
    }
