"""The operator console in a real browser: Debian's headless Chromium driven by Playwright for Python.

The app runs on a loopback HTTP server in this process; webhooks arrive signed over HTTP; the worker and the
sender run here by hand against the fake Graph API. Nothing downloads a browser: Playwright launches
/usr/bin/chromium (``apt-get install chromium``; .ci/run installs it). Screenshots of the inbox and a conversation at
desktop and phone widths go to ``$CHATOPS_SCREENSHOTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from chatops.channels import sign
from chatops.db.tables import conversations, outbound_messages
from tests.admin import deliver, sent_texts
from tests.console import PASSWORD, ConsoleHarness, staff_email
from tests.fakes.graph_api import FakeGraphAPI
from tests.webhook import APP_SECRET, PHONE_NUMBER_ID, whatsapp_text

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]  # fmt: skip
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
WAIT_MS = 10_000
# Read at import: the autouse fixture in conftest.py clears CHATOPS_* variables before each test.
SCREENSHOTS = os.environ.get("CHATOPS_SCREENSHOTS")

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    pytest.mark.xdist_group("chromium"),  # one browser at a time under `make test` (pytest-xdist): each wants a core
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture
def backend() -> str:
    return "sqlite"  # the browser flow is the same on both databases; tests/test_console.py covers PostgreSQL


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


@pytest.fixture
def console(tmp_path: Path, database_url: str, db: sa.Engine, graph: FakeGraphAPI) -> Iterator[ConsoleHarness]:
    harness = ConsoleHarness(tmp_path, database_url, db, graph_api_url=graph.graph_api_url)
    yield harness
    harness.runtime.variables.runner.close()


@pytest.fixture
def base_url(console: ConsoleHarness) -> Iterator[str]:
    server = make_server("127.0.0.1", 0, console.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    folder = Path(SCREENSHOTS) if SCREENSHOTS else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def post_webhook(base_url: str, body: bytes) -> None:
    headers = {"X-Hub-Signature-256": sign(body, APP_SECRET), "Content-Type": "application/json"}
    response = httpx.post(f"{base_url}/webhooks/whatsapp", content=body, headers=headers)
    assert response.status_code == 200, response.text


def status_webhook(provider_id: str, status: str, timestamp: int) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": PHONE_NUMBER_ID},
        "statuses": [{"id": provider_id, "status": status, "timestamp": str(timestamp), "recipient_id": "15550001111"}],
    }
    entry = {"id": "102290129340398", "changes": [{"value": value, "field": "messages"}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def test_operator_flow_in_chromium(
    console: ConsoleHarness, graph: FakeGraphAPI, base_url: str, screenshots: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    console.send("hello", wa_id="15550002222")  # another customer, served by the bot: not waiting
    console.drain()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        try:
            page = browser.new_page(viewport=DESKTOP)
            page.set_default_timeout(WAIT_MS)
            page.goto(f"{base_url}/console/")
            page.fill("input[name=email]", staff_email("operator"))
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            expect(page.locator("#waiting-count")).to_have_text("0")
            page.evaluate("window.notReloaded = true")

            # A customer asks for a person: a signed webhook, the worker's turn hands off.
            now = int(console.clock().timestamp())
            post_webhook(base_url, whatsapp_text("hello", timestamp=now))
            console.drain()
            console.clock.advance(40)
            post_webhook(base_url, whatsapp_text("I need a human, my pizza is cold", timestamp=now + 40))
            console.drain()
            console.clock.advance(4 * 60)
            waiting = page.locator("a.conversation-link.waiting")
            expect(waiting).to_have_count(1)  # appeared without a reload
            expect(page.locator("#waiting-count")).to_have_text("1")
            expect(waiting).to_contain_text("waiting 4m")
            assert page.evaluate("window.notReloaded") is True
            assert page.title().startswith("(1) ")
            page.screenshot(path=str(screenshots / "inbox-desktop.png"))
            page.set_viewport_size(PHONE)
            page.screenshot(path=str(screenshots / "inbox-phone.png"))
            page.set_viewport_size(DESKTOP)

            # j opens the next waiting conversation; / focuses the reply box; Ctrl+Enter sends.
            page.keyboard.press("j")
            expect(page.locator("#reply-text")).to_be_visible()
            expect(page.locator("ol.thread")).to_contain_text("my pizza is cold")
            page.keyboard.press("/")
            page.keyboard.type("Sorry about that! A fresh one is on its way.")
            page.keyboard.press("Control+Enter")
            expect(page.locator(".flash.ok")).to_have_text("Sent.")
            deliver(console)
            assert sent_texts(graph)[-1] == "Sorry about that! A fresh one is on its way."

            # Meta reports delivery: the tick changes without a reload.
            with console.db.connect() as connection:
                provider_id = connection.execute(
                    sa.select(outbound_messages.c.provider_message_id).where(outbound_messages.c.sent_by.is_not(None))
                ).scalar_one()
            page.evaluate("window.notReloaded = true")
            operator_tick = page.locator("li.msg.operator .tick")
            expect(operator_tick).to_have_attribute("title", "sent")
            post_webhook(base_url, status_webhook(provider_id, "delivered", now + 300))
            expect(operator_tick).to_have_attribute("title", "delivered")
            assert page.evaluate("window.notReloaded") is True
            page.screenshot(path=str(screenshots / "conversation-desktop.png"))
            page.set_viewport_size(PHONE)
            page.screenshot(path=str(screenshots / "conversation-phone.png"))
            page.set_viewport_size(DESKTOP)

            # Hand back to the bot at a chosen stage, then log out.
            page.select_option("#handback-stage", "menu")
            page.click("#handback")
            expect(page.locator(".flash.ok")).to_contain_text("Handed back to the bot at menu")
            with console.db.connect() as connection:
                assert connection.execute(sa.select(conversations.c.mode, conversations.c.stage).where(
                    conversations.c.user_id == "15550001111")).one() == ("bot", "menu")  # fmt: skip
            page.click("#logout")
            expect(page.locator("h1")).to_have_text("Log in")
            page.goto(f"{base_url}/console/")
            expect(page.locator("h1")).to_have_text("Log in")
        finally:
            browser.close()
    for name in ("inbox-desktop", "inbox-phone", "conversation-desktop", "conversation-phone"):
        assert (screenshots / f"{name}.png").stat().st_size > 5_000
