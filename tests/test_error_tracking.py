"""Optional Sentry (CHATOPS_SENTRY_DSN): errors become events with nothing personal in them, checked with the SDK's
own transport interface (events kept in memory, nothing sent over the network)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.error_tracking import init_error_tracking
from chatops.logs import log_context
from chatops.web.app import create_app
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook

PHONE = "4915112345678"
DSN = "https://public-key@sentry.invalid/1"


class KeptEvents(Transport):
    """A Sentry transport that keeps each event instead of sending it."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.events: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.events += [item.payload.json for item in envelope.items if item.type == "event" and item.payload.json]


def without_source_lines(value: Any) -> Any:
    """The events without the lines of source code around each frame (SDK 3 attaches the whole stack, this test's
    own frame and its string literals included): code, not data about a request."""
    if isinstance(value, dict):
        source = {"pre_context", "context_line", "post_context"}
        return {key: without_source_lines(item) for key, item in value.items() if key not in source}
    if isinstance(value, list):
        return [without_source_lines(item) for item in value]
    return value


@pytest.fixture
def sentry() -> Iterator[KeptEvents]:
    transport = KeptEvents()
    settings = load_settings(sentry_dsn=DSN, whatsapp_access_token=ACCESS_TOKEN, openai_api_key="sk-secret-4411")
    assert init_error_tracking(settings, transport=transport)
    yield transport
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)


def test_no_dsn_no_sentry() -> None:
    assert not init_error_tracking(load_settings())


def test_a_logged_error_is_sent_scrubbed_with_its_context(sentry: KeptEvents) -> None:
    log = logging.getLogger("chatops.engine.worker")

    def provider_call(token: str, number: str) -> None:
        raise RuntimeError(f"GET https://shop.example/orders/{number}?key=sk-secret-4411 failed for {number}")

    with log_context(request_id="req-12345678", conversation_id=42):
        try:
            provider_call(ACCESS_TOKEN, PHONE)
        except RuntimeError:
            log.exception("turn of conversation 42 failed for +%s (token %s)", PHONE, ACCESS_TOKEN)
    sentry_sdk.flush()

    (event,) = sentry.events
    text = repr(event)
    for private in (PHONE, ACCESS_TOKEN, "sk-secret-4411"):
        assert private not in text
    assert event["tags"]["request_id"] == "req-12345678"
    assert event["tags"]["conversation_id"] == "42"
    (exception,) = event["exception"]["values"]
    assert exception["value"] == "GET https://shop.example/orders/491…?… failed for 491…"
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    assert "user" not in event


def test_a_request_error_keeps_no_header_body_or_query(sentry: KeptEvents, tmp_path: Any) -> None:
    settings = load_settings(
        whatsapp_app_secret=APP_SECRET, whatsapp_verify_token=VERIFY_TOKEN, whatsapp_access_token=ACCESS_TOKEN
    )
    down = create_db_engine("postgresql://app:db-password@127.0.0.1:9/chatops")  # nothing listens: unavailable
    client = create_app(settings, None, db=down).test_client()
    answer = Webhook(client).send_text(f"my number is {PHONE}", wa_id=PHONE)
    assert answer.status_code == 503
    sentry_sdk.flush()

    assert sentry.events
    text = repr(without_source_lines(sentry.events))
    for private in (PHONE, "db-password", APP_SECRET, "X-Hub-Signature-256"):
        assert private not in text
    requests = [event["request"] for event in sentry.events if "request" in event]
    assert requests
    assert all(set(request["headers"]) <= {"Content-Type", "Content-Length", "User-Agent", "X-Request-Id"}
               for request in requests)  # fmt: skip
    assert all("data" not in request for request in requests)
