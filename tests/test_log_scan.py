"""The log scan: a full run of ``chatops serve`` leaks no secret and no full phone number, in logs or answers.

One real ``chatops serve`` process at ``--log-level DEBUG`` with every secret set (both channels' app secrets,
verify tokens and send tokens, the OpenAI key, a metrics token, a key inside a provider URL, the database password
where the database takes one) holds conversations on WhatsApp and Messenger through an http provider and the
OpenAI SDK, and walks the error paths: bad and missing signatures, a wrong verify token, a body that is not JSON,
/metrics without its token, a provider answering 500, the AI failing, and the fake Graph API refusing sends
(transient, permanent, a dropped connection, an expired token). Then every line the process wrote and every
HTTP error answer it gave are searched for each secret and each full phone number. The run logs as JSON
(``--log-format json``): every log line must be one JSON object, and the lines about a conversation's turn or send
name its ``conversation_id``; a webhook's lines name the ``request_id`` nginx sent.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatops.channels import sign
from chatops.db.tables import inbound_messages
from tests.fakes.graph_api import FakeGraphAPI, Reply
from tests.fakes.openai_server import FakeOpenAI, HTTPError
from tests.processes import ServeProcess, wait_for
from tests.webhook import whatsapp_text

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECRETS = {
    "CHATOPS_WHATSAPP_APP_SECRET": "wa-app-secret-7f3a9c",
    "CHATOPS_WHATSAPP_VERIFY_TOKEN": "wa-verify-token-51be",
    "CHATOPS_WHATSAPP_ACCESS_TOKEN": "EAAwhatsappACCESS0token93d1",
    "CHATOPS_MESSENGER_APP_SECRET": "ms-app-secret-0c77e2",
    "CHATOPS_MESSENGER_VERIFY_TOKEN": "ms-verify-token-a4d0",
    "CHATOPS_MESSENGER_PAGE_TOKEN": "EAApagePAGE0token5e2b",
    "OPENAI_API_KEY": "sk-proj-scanSECRETkey4411",
    "CHATOPS_METRICS_TOKEN": "metrics-token-9911ab",
    "SHOP_KEY": "shop-api-key-6c1d",
}
DB_PASSWORD = "db-password-Vw83q"
PHONES = {"ada": "4915112345678", "bo": "4917998765432", "cy": "447700900123"}
FAILING_PHONE = PHONES["bo"]  # the order API answers 500 for this customer
PAGE_ID = "106600112233445"
PSID = "7100000000000001"

STAGES = """\
bot:
  name: Scan Shop
  start: welcome
  timezone: UTC
  session_timeout: 1h
  stale_after: 10m
ai:
  model: gpt-4o-mini
  timeout: 5s
providers:
  - name: order
    use: http
    url: "{api}/orders/{{{{ user.id }}}}?name={{{{ user.name }}}}&said={{{{ message.text }}}}&key=${{SHOP_KEY}}"
    headers: {{X-Customer: "{{{{ user.phone }}}}"}}
    provides: [status]
    timeout: 2s
    retries: 1
stages:
  welcome:
    reply: welcome.j2
    next: chat
  chat:
    prompt: chat.j2
    providers: [order]
    on_error: sorry.j2
    transitions:
      - when: {{default: true}}
        to: chat
"""
TEMPLATES = {
    "welcome.j2": "Hi {{ user.name }} ({{ user.id }}, {{ user.phone }})!",
    "chat.j2": "Customer {{ user.name }} {{ user.id }} {{ user.phone }}; order {{ order.status }}. Be brief.",
    "sorry.j2": "Sorry {{ user.id }}, we cannot look that up now.",
}


class OrderAPI:
    """The shop's order API on loopback: ``{"status": "shipped"}``, or 500 for FAILING_PHONE."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                failing = f"/orders/{FAILING_PHONE}?" in self.path
                body = json.dumps({"error": "boom"} if failing else {"status": "shipped"}).encode()
                self.send_response(500 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def order_api() -> Iterator[OrderAPI]:
    api = OrderAPI()
    yield api
    api.close()


def with_password(database_url: str) -> str:
    """The URL with DB_PASSWORD added when the database takes one (PostgreSQL; SQLite has none)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or url.password:
        return database_url
    return url.set(password=DB_PASSWORD).render_as_string(hide_password=False)


def messenger_text(text: str, *, mid: str) -> bytes:
    now = int(time.time() * 1000)
    event = {
        "sender": {"id": PSID},
        "recipient": {"id": PAGE_ID},
        "timestamp": now,
        "message": {"mid": mid, "text": text},
    }
    return json.dumps({"object": "page", "entry": [{"id": PAGE_ID, "time": now, "messaging": [event]}]}).encode()


class Meta:
    """Meta's side of the webhooks: signed (or badly signed) deliveries; keeps every error answer."""

    def __init__(self, client: httpx.Client, url: str) -> None:
        self.client = client
        self.url = url
        self.errors: list[httpx.Response] = []

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        response = self.client.request(method, f"{self.url}{path}", **options)
        if response.status_code >= 400:
            self.errors.append(response)
        return response

    def post(self, channel: str, body: bytes, *, signature: str | None = None) -> httpx.Response:
        secret = SECRETS[f"CHATOPS_{channel.upper()}_APP_SECRET"]
        headers = {"Content-Type": "application/json", "X-Hub-Signature-256": signature or sign(body, secret)}
        return self.request("POST", f"/webhooks/{channel}", content=body, headers=headers)


def settled(db: sa.Engine, count: int) -> bool:
    """Whether ``count`` inbound messages are stored and none is still waiting for its turn."""
    with db.connect() as connection:
        statuses = [row.status for row in connection.execute(sa.select(inbound_messages.c.status))]
    return len(statuses) >= count and all(status in ("done", "failed", "skipped") for status in statuses)


def test_a_full_run_leaks_no_secret_and_no_phone_number(
    database_url: str, db: sa.Engine, tmp_path: Path, order_api: OrderAPI
) -> None:
    bot_dir = tmp_path
    (bot_dir / "templates").mkdir()
    (bot_dir / "stages.yaml").write_text(STAGES.format(api=order_api.url))
    for name, source in TEMPLATES.items():
        (bot_dir / "templates" / name).write_text(source)
    graph, openai = FakeGraphAPI().start(), FakeOpenAI().start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
    env |= {
        **SECRETS,
        "CHATOPS_DATABASE_URL": with_password(database_url),
        "CHATOPS_LOG_LEVEL": "DEBUG",
        "CHATOPS_LOG_FORMAT": "json",
        "CHATOPS_GRAPH_API_URL": graph.graph_api_url,
        "CHATOPS_GRAPH_TIMEOUT": "2",
        "OPENAI_BASE_URL": openai.base_url,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    server = ServeProcess(bot_dir, env, name="scan")
    try:
        server.start()
        with httpx.Client(timeout=10) as client:
            meta = Meta(client, server.url)
            run_conversations(meta, graph, openai, db, server)
            metrics = meta.request("GET", "/metrics")
            assert metrics.status_code == 401
            bearer = {"Authorization": f"Bearer {SECRETS['CHATOPS_METRICS_TOKEN']}"}
            assert "chatops_turns" in meta.request("GET", "/metrics", headers=bearer).text
        server.stop()
    finally:
        server.kill()
        graph.stop()
        openai.stop()

    log = server.log.read_text(errors="replace")
    # The run went where it should: every path below was taken, so the scan means something.
    for expected in ("provider 'order' failed", "Graph API POST", "retries", "paused", "chatops serving"):
        assert expected in log, f"{expected!r} not in the log:\n{server.tail(80)}"
    assert log.count("turn of conversation") >= 5, server.tail(80)  # 2 provider and 3 AI failures
    assert len(openai.requests) > 9  # the scripted failures, then answers
    assert any(f"/orders/{PHONES['ada']}?" in path for path in order_api.paths)  # the provider got the number
    messenger_sends = [r for r in graph.requests if r.path == "/me/messages"]
    assert messenger_sends
    assert all(
        r.headers["authorization"] == f"Bearer {SECRETS['CHATOPS_MESSENGER_PAGE_TOKEN']}" and not r.query
        for r in messenger_sends
    )
    assert sorted(r.status_code for r in meta.errors) == [400, 401, 401, 403, 403, 403, 403]
    lines = json_log_lines(log)
    turns = [line for line in lines if str(line["message"]).startswith("turn of conversation")]
    assert len(turns) >= 5
    assert all(line["message"].startswith(f"turn of conversation {line['conversation_id']} ") for line in turns)
    sends = [line for line in lines if "Graph API POST" in str(line["message"])]
    assert sends
    assert all(isinstance(line.get("conversation_id"), int) for line in sends)
    assert all(r.headers.get("x-request-id") for r in meta.errors)  # every answer names its request

    answers = "\n".join(
        f"{r.status_code} {r.headers} {r.text}" for r in meta.errors
    )  # every HTTP error answer, headers included
    private = {**SECRETS, "database password": DB_PASSWORD, **{f"phone of {k}": v for k, v in PHONES.items()}}
    for what, value in private.items():
        assert value not in log, f"{what} in the server log: {_around(log, value)}"
        assert value not in answers, f"{what} in an HTTP error answer: {_around(answers, value)}"


def json_log_lines(log: str) -> list[dict[str, Any]]:
    """Every log line of the run, parsed: all of them JSON objects (the banner, printed for a person, is not a log
    line)."""
    lines = []
    for text in log.splitlines():
        if text.startswith("{"):
            lines.append(json.loads(text))
        else:
            assert not re.match(r"\S+ \S+ (DEBUG|INFO|WARNING|ERROR) ", text), f"a text log line: {text}"
    assert len(lines) >= 10
    return lines


def run_conversations(meta: Meta, graph: FakeGraphAPI, openai: FakeOpenAI, db: sa.Engine, server: Any) -> None:
    """Both channels, every error path; returns once every stored message has had its turn."""
    # Subscription checks: one wrong verify token, then the right one on each channel.
    for channel in ("whatsapp", "messenger"):
        wrong = {"hub.mode": "subscribe", "hub.verify_token": "not-the-token", "hub.challenge": "42"}
        assert meta.request("GET", f"/webhooks/{channel}", params=wrong).status_code == 403
        token = SECRETS[f"CHATOPS_{channel.upper()}_VERIFY_TOKEN"]
        right = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": "42"}
        assert meta.request("GET", f"/webhooks/{channel}", params=right).text == "42"

    # Refused deliveries: no signature, a wrong one, another app's secret, a body that is not JSON.
    hello = whatsapp_text("hello", wa_id=PHONES["ada"], timestamp=int(time.time()))
    assert meta.post("whatsapp", hello, signature="sha256=" + "0" * 64).status_code == 403
    assert meta.request("POST", "/webhooks/whatsapp", content=hello).status_code == 401
    ms_hello = messenger_text("hello", mid="m_SCAN0")
    assert meta.post("messenger", ms_hello, signature=sign(ms_hello, "another-apps-secret")).status_code == 403
    assert meta.post("messenger", b"{not json").status_code == 400

    # The Graph API refuses the first sends: transient, permanent (outside the window), a dropped connection.
    graph.script(Reply.error(2, status=500), Reply.error(131047), Reply.dropped())
    stored = 0
    for round_ in range(3):  # round 0: the welcome; 1: the AI fails every call; 2: it answers
        if round_ == 1:  # three AI calls (one per customer whose provider works), 3 attempts each
            openai.script(*[HTTPError(500, "upstream failure")] * 9)
        for person, phone in PHONES.items():
            body = whatsapp_text(
                f"where is my order, I am {person}?",
                wa_id=phone,
                name=person.title(),
                message_id=f"wamid.SCAN{person}{round_}",
                timestamp=int(time.time()),
            )
            assert meta.post("whatsapp", body).status_code == 200
            stored += 1
        assert (
            meta.post("messenger", messenger_text(f"hi, round {round_}", mid=f"m_SCAN{round_ + 1}")).status_code == 200
        )
        stored += 1
        wait_for(lambda count=stored: settled(db, count), timeout=40, what="every turn", server=server)

    # Last, an expired token: the sender pauses the channel and says so, without the token.
    graph.script(*[Reply.error(190, status=401, subcode=463, message="Error validating access token")] * 4)
    body = whatsapp_text(
        "one more", wa_id=PHONES["cy"], name="Cy", message_id="wamid.SCANlast", timestamp=int(time.time())
    )
    assert meta.post("whatsapp", body).status_code == 200
    wait_for(lambda: settled(db, stored + 1), timeout=40, what="the last turn", server=server)
    wait_for(
        lambda: "is paused" in server.log.read_text(errors="replace"), timeout=20, what="the token error", server=server
    )


def _around(text: str, value: str) -> str:
    at = text.find(value)
    return repr(text[max(0, at - 200) : at + len(value) + 100])
