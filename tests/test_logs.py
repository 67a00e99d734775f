"""The logging every command sets up (chatops.logs): no URL query string, password or library request line."""

from __future__ import annotations

import logging

import httpx
import pytest

from chatops.logs import redact, redact_url
from tests.fakes.graph_api import FakeGraphAPI

SECRET = "sk-query-secret"


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("GET https://shop.example/orders?customer=4915112345678 failed", "GET https://shop.example/orders?… failed"),
        ("to postgresql://app:pw@db:5432/x?password=pw.", "to postgresql://app:***@db:5432/x?…"),
        ("'http://u:p@h/a?b=c' and <https://h/p?q=1>", "'http://u:***@h/a?…' and <https://h/p?…>"),
        ("no URL at all: a?b=c", "no URL at all: a?b=c"),
        ("https://graph.facebook.com/v25.0/me/messages", "https://graph.facebook.com/v25.0/me/messages"),
    ],
)
def test_redact_drops_query_strings_and_passwords_of_every_url(text: str, redacted: str) -> None:
    assert redact(text) == redacted


def test_redact_url_says_there_was_a_query() -> None:
    assert redact_url("https://h/p?token=x") == "https://h/p?…"


def test_library_loggers_stay_quiet_at_debug(chatops_logging: pytest.LogCaptureFixture) -> None:
    """httpx logs every request URL at INFO (a query string may hold a token): held at WARNING even at DEBUG."""
    with FakeGraphAPI() as fake, httpx.Client() as http:
        http.post(f"{fake.graph_api_url}/me/messages", params={"access_token": SECRET}, json={})
    logging.getLogger("chatops.test").debug("our own debug lines still show")

    assert "our own debug lines still show" in chatops_logging.text
    assert SECRET not in chatops_logging.text
    assert not [record for record in chatops_logging.records if record.name.startswith(("httpx", "httpcore"))]


def test_our_lines_and_tracebacks_lose_query_strings(chatops_logging: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("chatops.test")
    log.warning("calling %s", f"https://shop.example/orders?key={SECRET}")
    try:
        raise RuntimeError(f"failed: https://shop.example/orders?key={SECRET}")
    except RuntimeError:
        log.exception("provider call failed")

    assert "calling https://shop.example/orders?…" in chatops_logging.text
    formatted = "\n".join(chatops_logging.handler.format(record) for record in chatops_logging.records)
    assert "RuntimeError: failed: https://shop.example/orders?…" in formatted
    assert SECRET not in formatted


def json_lines(records: list[logging.LogRecord]) -> list[dict[str, object]]:
    """The records as `--log-format json` writes them (the filters and formatter configure_logging installs)."""
    import json

    from chatops.logs import AddContext, JsonLineFormatter, RedactUrls

    formatter, context, redact_urls = JsonLineFormatter(), AddContext(), RedactUrls()
    lines = []
    for record in records:
        assert context.filter(record)
        assert redact_urls.filter(record)
        text = formatter.format(record)
        assert "\n" not in text  # one object per line, a traceback included
        lines.append(json.loads(text))
    return lines


def test_json_lines_carry_the_context_and_lose_query_strings(chatops_logging: pytest.LogCaptureFixture) -> None:
    from chatops.logs import log_context

    log = logging.getLogger("chatops.test")
    with log_context(request_id="req-0123456789"), log_context(conversation_id=42):
        log.warning("calling %s", f"https://shop.example/orders?key={SECRET}")
        try:
            raise RuntimeError(f"failed: https://shop.example/orders?key={SECRET}")
        except RuntimeError:
            log.exception("provider call failed")
    log.info("outside")

    first, second, outside = json_lines(chatops_logging.records)
    assert {key: first[key] for key in ("level", "logger", "message", "request_id", "conversation_id")} == {
        "level": "WARNING",
        "logger": "chatops.test",
        "message": "calling https://shop.example/orders?…",
        "request_id": "req-0123456789",
        "conversation_id": 42,
    }
    assert "time" in first
    assert "RuntimeError: failed: https://shop.example/orders?…" in str(second["exc_info"])
    assert SECRET not in str(second)
    assert "request_id" not in outside
    assert "conversation_id" not in outside


def test_text_lines_end_with_the_context() -> None:
    from chatops.logs import AddContext, TextFormatter, log_context

    record = logging.LogRecord("chatops.test", logging.WARNING, __file__, 1, "sent %s", ("hi",), None)
    with log_context(conversation_id=7):
        AddContext().filter(record)
    assert TextFormatter().format(record).endswith("WARNING chatops.test: sent hi [conversation_id=7]")


def test_a_webhook_line_carries_the_request_id_nginx_sent(
    chatops_logging: pytest.LogCaptureFixture, database_url: str
) -> None:
    from chatops.channels import sign
    from chatops.config.settings import load_settings
    from chatops.web.app import create_app
    from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, whatsapp_text

    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        whatsapp_phone_number_ids="999",  # the webhook's number is not ours: a line is logged about it
    )
    client = create_app(settings, None).test_client()
    body = whatsapp_text("hello")

    answer = client.post(
        "/webhooks/whatsapp",
        data=body,
        headers={"X-Hub-Signature-256": sign(body, APP_SECRET), "X-Request-ID": "0f1e2d3c4b5a69788796a5b4c3d2e1f0"},
    )
    assert answer.status_code == 200
    assert answer.headers["X-Request-ID"] == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    (line,) = [line for line in json_lines(chatops_logging.records) if "allow-list" in str(line["message"])]
    assert line["request_id"] == "0f1e2d3c4b5a69788796a5b4c3d2e1f0"

    # An id that could forge a log line is replaced by a new one, which the answer names.
    forged = client.get("/healthz", headers={"X-Request-ID": 'x" injected line'})
    assert forged.headers["X-Request-ID"] != 'x" injected line'
    assert len(forged.headers["X-Request-ID"]) == 32
