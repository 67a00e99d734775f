"""Graph API client: send messages and indicators, and turn every failure into a classified GraphAPIError.

The HTTP client is injected (an ``httpx.Client``: one pool per process, or a loopback fake in tests). Bodies
come from :func:`~chatops.channels.whatsapp.whatsapp_request` and
:func:`~chatops.channels.messenger.messenger_request`. Tokens are never logged nor put into error messages:
both channels send theirs in the ``Authorization: Bearer`` header (the Graph API accepts it for page tokens as
for system-user tokens), so no URL carries a secret; transport errors are still reported by type only.

Classification (``GraphAPIError.transient``) tells the sender whether to retry with backoff or record the
failure: see :func:`is_transient`. Code 190 (token invalid or expired) is permanent and
:func:`is_token_error` lets the sender pause the channel instead of failing message after message.
"""

from __future__ import annotations

from typing import Any, Literal

import httpx

from chatops.config.settings import DEFAULT_GRAPH_API_URL, Settings
from chatops.errors import GraphAPIError

# Meta error codes worth a retry: throttling (4, 80007, 130429, 131056), temporary failures (1, 2, 1200,
# 131000, 131016) and "message could not be sent for a temporary reason" (131057: account in maintenance).
TRANSIENT_CODES = frozenset({1, 2, 4, 1200, 80007, 130429, 131000, 131016, 131056, 131057})
# Codes that are permanent whatever the HTTP status says: outside the 24-hour window (131047), not a WhatsApp
# user / unavailable (131026, 551), bad parameter (100), permission (10), token (190); Messenger's
# "outside the allowed window" arrives as code 10 with subcode 2018278.
PERMANENT_CODES = frozenset({10, 100, 190, 551, 131026, 131047})
PERMANENT_SUBCODES = frozenset({2018278})
TOKEN_ERROR_CODE = 190

SenderAction = Literal["typing_on", "typing_off", "mark_seen"]


def is_transient(*, status: int | None, code: int | None, subcode: int | None = None) -> bool:
    """Whether a retry may succeed: known transient codes, HTTP 5xx and 429, and no response at all."""
    if code in TRANSIENT_CODES:
        return True
    if code in PERMANENT_CODES or subcode in PERMANENT_SUBCODES:
        return False
    return status is None or status >= 500 or status == 429


def is_token_error(error: GraphAPIError) -> bool:
    """Whether ``error`` says the access token is invalid or expired (code 190): pause the channel, alert."""
    return error.code == TOKEN_ERROR_CODE


class GraphClient:
    """Calls the Graph API over an injected ``httpx.Client``; every method raises GraphAPIError on failure."""

    def __init__(self, http: httpx.Client, *, base_url: str = DEFAULT_GRAPH_API_URL, timeout: float = 10.0) -> None:
        self._http = http
        self._base_url = base_url.rstrip("/")
        self._timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, http: httpx.Client) -> GraphClient:
        """A client for ``settings.graph_api_url`` with ``settings.graph_timeout``."""
        return cls(http, base_url=settings.graph_api_url, timeout=settings.graph_timeout)

    def send_whatsapp(self, phone_number_id: str, access_token: str, body: dict[str, Any]) -> str:
        """Send ``body`` from ``phone_number_id``; returns the new message's wamid."""
        data = self._post(f"/{phone_number_id}/messages", body, bearer=access_token)
        message_id = _first_message_id(data)
        if message_id is None:
            raise GraphAPIError("WhatsApp send answered without messages[0].id", status=200)
        return message_id

    def mark_whatsapp_read(
        self, phone_number_id: str, access_token: str, message_id: str, *, typing: bool = False
    ) -> None:
        """Mark an inbound message (and the ones before it) read: blue ticks; ``typing`` also shows "typing…"."""
        body: dict[str, Any] = {"messaging_product": "whatsapp", "status": "read", "message_id": message_id}
        if typing:
            body["typing_indicator"] = {"type": "text"}
        self._post(f"/{phone_number_id}/messages", body, bearer=access_token)

    def send_messenger(self, page_token: str, body: dict[str, Any]) -> str:
        """Send ``body`` from the Page the token belongs to; returns the new message's mid."""
        data = self._post("/me/messages", body, bearer=page_token)
        message_id = data.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            raise GraphAPIError("Messenger send answered without message_id", status=200)
        return message_id

    def messenger_sender_action(self, page_token: str, user_id: str, action: SenderAction) -> None:
        """Show ``typing_on``/``typing_off`` or ``mark_seen`` to ``user_id`` (Meta wants it as its own call)."""
        self._post("/me/messages", {"recipient": {"id": user_id}, "sender_action": action}, bearer=page_token)

    def _post(self, path: str, body: dict[str, Any], *, bearer: str) -> dict[str, Any]:
        # The token goes in a header, never the query string: httpx logs request URLs, and proxies keep them.
        headers = {"Authorization": f"Bearer {bearer}"}
        try:
            response = self._http.post(self._base_url + path, json=body, headers=headers, timeout=self._timeout)
        except httpx.TimeoutException:
            raise GraphAPIError(f"Graph API POST {path} timed out after {self._timeout:g}s", transient=True) from None
        except httpx.TransportError as exc:
            # str(exc) may quote the request URL (a Graph API base URL may hold credentials): the type only.
            message = f"Graph API POST {path} failed: {type(exc).__name__}"
            raise GraphAPIError(message, transient=True) from None
        data = _json_object(response)
        if response.is_success:
            return data
        raise _error_from_response(path, response, data)


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _error_from_response(path: str, response: httpx.Response, data: dict[str, Any]) -> GraphAPIError:
    error = data.get("error")
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    detail = error.get("message") if isinstance(error.get("message"), str) else response.reason_phrase
    parts = [f"code {code}" if code is not None else None, f"subcode {subcode}" if subcode is not None else None]
    codes = ", ".join(p for p in parts if p)
    message = f"Graph API POST {path} failed with HTTP {response.status_code}" + (f" ({codes})" if codes else "")
    return GraphAPIError(
        f"{message}: {detail}",
        code=code,
        subcode=subcode,
        status=response.status_code,
        transient=is_transient(status=response.status_code, code=code, subcode=subcode),
        retry_after=_retry_after(response.headers.get("Retry-After")),
    )


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header; the HTTP-date form is not used by Meta and reads as absent."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _first_message_id(data: dict[str, Any]) -> str | None:
    messages = data.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[0], dict):
        message_id = messages[0].get("id")
        return message_id if isinstance(message_id, str) and message_id else None
    return None
