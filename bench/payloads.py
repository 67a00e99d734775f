"""Signed WhatsApp webhooks, generated before a load run so that the run measures the server, not the client.

Text-message bodies are shaped like tests/fixtures/meta/wa_text.json (one entry, one change, one text message),
status bodies like wa_status_delivered.json (one status, with its conversation and pricing objects); each has a
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


def status_webhook(*, wamid: str, recipient: str, status: str, timestamp: int) -> bytes:
    """The bytes of a WhatsApp status webhook (``sent``/``delivered``/``read``) for outbound message ``wamid``."""
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
                            "statuses": [
                                {
                                    "id": wamid,
                                    "status": status,
                                    "timestamp": str(timestamp),
                                    "recipient_id": recipient,
                                    "conversation": {
                                        "id": "7270432eae37498234f4444b35ffc5",
                                        "origin": {"type": "service"},
                                    },
                                    "pricing": {"billable": True, "pricing_model": "CBP", "category": "service"},
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


STATUS_MIX = ("sent", "delivered", "read")


def outbound_id(run_id: str, n: int) -> str:
    """The provider id of outbound message ``n`` of run ``run_id`` (what status webhook ``n`` reports on)."""
    return f"wamid.OUT{run_id}.{n:08d}"


def signed_status_bodies(
    run_id: str, count: int, *, senders: int = 5, secret: str = APP_SECRET, timestamp: int | None = None
) -> list[SignedBody]:
    """``count`` signed status webhooks: body ``n`` reports ``STATUS_MIX[n % 3]`` for :func:`outbound_id` ``n``.

    Each body names its own outbound message, so every ``delivered``/``read`` that is acknowledged changes one
    row (a ``sent`` report changes nothing: the row is ``sent`` already), which the benchmark counts.
    """
    stamp = int(time.time()) if timestamp is None else timestamp
    bodies = []
    for n in range(count):
        body = status_webhook(
            wamid=outbound_id(run_id, n),
            recipient=sender_id(n % senders),
            status=STATUS_MIX[n % len(STATUS_MIX)],
            timestamp=stamp,
        )
        bodies.append(SignedBody(body, sign(body, secret)))
    return bodies


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
