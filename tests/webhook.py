"""Test helpers: signed webhook deliveries through the real Flask route, and WhatsApp payload builders."""

from __future__ import annotations

import json
import uuid
from typing import Any

from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from chatops.channels import sign

APP_SECRET = "test-app-secret"
VERIFY_TOKEN = "test-verify-token"
ACCESS_TOKEN = "test-access-token"
PHONE_NUMBER_ID = "106540352242922"


class Webhook:
    """Posts bodies to ``/webhooks/<channel>`` signed with the test app secret (exact bytes)."""

    def __init__(self, client: FlaskClient, *, secret: str = APP_SECRET) -> None:
        self.client = client
        self.secret = secret

    def post(self, body: bytes, *, channel: str = "whatsapp", signature: str | None = None) -> TestResponse:
        header = sign(body, self.secret) if signature is None else signature
        return self.client.post(
            f"/webhooks/{channel}",
            data=body,
            headers={"X-Hub-Signature-256": header, "Content-Type": "application/json"},
        )

    def send_text(self, text: str, **options: Any) -> TestResponse:
        return self.post(whatsapp_text(text, **options))


def whatsapp_text(
    text: str,
    *,
    wa_id: str = "15550001111",
    name: str = "Ada",
    message_id: str | None = None,
    timestamp: int = 1_790_000_000,
    phone_number_id: str = PHONE_NUMBER_ID,
) -> bytes:
    """A WhatsApp text webhook shaped like Meta's (wa_text.json), with a fresh wamid unless given."""
    message = {
        "from": wa_id,
        "id": message_id or f"wamid.{uuid.uuid4().hex}",
        "timestamp": str(timestamp),
        "text": {"body": text},
        "type": "text",
    }
    return whatsapp_envelope([message], wa_id=wa_id, name=name, phone_number_id=phone_number_id)


def whatsapp_envelope(
    messages: list[dict[str, Any]], *, wa_id: str, name: str, phone_number_id: str = PHONE_NUMBER_ID
) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": phone_number_id},
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "messages": messages,
    }
    payload = {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}],
    }
    return json.dumps(payload).encode()
