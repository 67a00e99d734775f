"""Webhook authentication: the ``X-Hub-Signature-256`` HMAC and the ``hub.*`` subscription handshake.

Both WhatsApp and Messenger sign the raw request body with the app secret (HMAC-SHA256, hex, prefixed
``sha256=``). The signature is over the exact bytes Meta sent, so it must be checked before any JSON decoding:
Meta escapes non-ASCII characters (``\\u00e9``), and re-encoding the parsed JSON would give other bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping

from chatops.errors import ConfigError, SignatureError, WebhookError

_HEADER = re.compile(r"sha256=([0-9a-fA-F]{64})")


def sign(body: bytes, secret: str) -> str:
    """The ``X-Hub-Signature-256`` header value (``sha256=<hex>``) Meta would send for ``body``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, header: str | None, secret: str) -> None:
    """Check ``header`` (``X-Hub-Signature-256``) against an HMAC-SHA256 of the raw ``body``.

    Raises SignatureError with status 401 when the header is missing or malformed, 403 when it does not match,
    and ConfigError when ``secret`` is empty (an empty key would let anyone sign).
    """
    if not secret:
        raise ConfigError(
            "the app secret is empty: webhook signatures cannot be checked",
            hint="set CHATOPS_WHATSAPP_APP_SECRET or CHATOPS_MESSENGER_APP_SECRET (Meta app → Settings → Basic)",
        )
    if header is None or not header.strip():
        raise SignatureError(
            "X-Hub-Signature-256 header is missing",
            status=401,
            hint="Meta signs every webhook; a request without the header did not come from Meta",
        )
    match = _HEADER.fullmatch(header.strip())
    if match is None:
        raise SignatureError("X-Hub-Signature-256 header is malformed: expected sha256=<64 hex digits>", status=401)
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, match.group(1).lower()):
        raise SignatureError(
            "X-Hub-Signature-256 does not match the body",
            status=403,
            hint="check the app secret; the signature covers the exact bytes received, before any decoding",
        )


def verify_subscription(params: Mapping[str, str], verify_token: str) -> str:
    """Answer Meta's ``GET`` subscription handshake: the ``hub.challenge`` to echo back, unchanged.

    Raises WebhookError 403 when ``hub.mode`` is not ``subscribe`` or ``hub.verify_token`` does not match
    (compared in constant time; an empty configured token matches nothing), 400 when ``hub.challenge`` is absent.
    """
    mode = params.get("hub.mode")
    if mode != "subscribe":
        raise WebhookError(f"hub.mode is {mode!r}, expected 'subscribe'", status=403)
    given = params.get("hub.verify_token") or ""
    if not verify_token or not hmac.compare_digest(given.encode(), verify_token.encode()):
        raise WebhookError(
            "hub.verify_token does not match",
            status=403,
            hint="the Verify token in the Meta app's webhook settings must equal CHATOPS_*_VERIFY_TOKEN",
        )
    challenge = params.get("hub.challenge")
    if challenge is None:
        raise WebhookError("hub.challenge is missing from the subscription request", status=400)
    return challenge
