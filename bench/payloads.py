"""Signed WhatsApp text webhooks, generated before a load run so that the run measures the server, not the client.

Bodies are shaped like ../shared/fixtures/meta/wa_text.json (one entry, one change, one text message); each has a
distinct ``wamid`` and is signed like Meta does: ``X-Hub-Signature-256: sha256=<HMAC-SHA256 of the exact bytes>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

APP_SECRET = "benchsecret"
PHONE_NUMBER_ID = "1122334455667"
WEBHOOK_PATH = "/webhooks/whatsapp"


@dataclass(frozen=True)
class SignedBody:
    """One request: the exact bytes and their ``X-Hub-Signature-256`` header value."""

    body: bytes
    signature: str


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    """``sha256=<hex>`` over the raw bytes, as Meta signs webhooks."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def text_webhook(*, wamid: str, sender: str, text: str, timestamp: int, name: str = "Bench User") -> bytes:
    """The bytes of a WhatsApp text-message webhook (compact JSON, like Meta's)."""
    payload = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "1234567890987654321",
                "changes": [
                    {
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550001111", "phone_number_id": PHONE_NUMBER_ID},
                            "contacts": [{"profile": {"name": name}, "wa_id": sender}],
                            "messages": [
                                {
                                    "from": sender,
                                    "id": wamid,
                                    "timestamp": str(timestamp),
                                    "text": {"body": text},
                                    "type": "text",
                                }
                            ],
                        },
                        "field": "messages",
                    }
                ],
            }
        ],
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def sender_id(index: int) -> str:
    """A phone-number-like WhatsApp id for sender ``index``."""
    return f"4915{index:09d}"


def signed_bodies(
    run_id: str,
    count: int,
    *,
    senders: int = 5,
    secret: str = APP_SECRET,
    timestamp: int | None = None,
    text: str = "Where is my order?",
) -> list[SignedBody]:
    """``count`` signed webhooks with distinct ids ``wamid.BENCH<run_id>.<n>``, round-robin over ``senders``.

    Message ``n`` comes from sender ``n % senders``, so each conversation receives its messages in order of ``n``.
    ``timestamp`` defaults to now (older messages count as stale and are stored, not answered).
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    bodies = []
    for n in range(count):
        body = text_webhook(
            wamid=f"wamid.BENCH{run_id}.{n:08d}", sender=sender_id(n % senders), text=f"{text} #{n}", timestamp=stamp
        )
        bodies.append(SignedBody(body, sign(body, secret)))
    return bodies
