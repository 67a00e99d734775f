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
