"""A corpus for ``chatops replay``: three conversations recorded through the real webhook route and worker, the
model behind the loopback fake OpenAI, the order API on loopback; and the CLI call that replays it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.config.bot import load_bot
from chatops.config.settings import load_settings
from chatops.engine.runtime import build_runtime
from chatops.engine.worker import Worker
from chatops.web.app import create_app
from tests.bots import write_bot
from tests.fakes.openai_server import FakeOpenAI, Reply, Scripted, default_response
from tests.harness import Clock
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text


def prompt_echo(body: dict[str, Any]) -> Scripted:
    """Replies depend on the system prompt and the user's text, so a changed prompt changes the reply."""
    if body.get("response_format"):
        return default_response(body)
    messages = body["messages"]
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    return Reply(f"[{system.split('.')[0]}] you said: {messages[-1]['content']}")


@dataclass
class Recorded:
    """The recorded bot's folder and stages.yaml, its database, the fake OpenAI and the environment to replay in."""

    folder: Path
    stages: Path
    database_url: str
    fake: FakeOpenAI
    env: dict[str, str]


CONVERSATIONS = {
    "15550001111": ["hello", "where is TS-123", "thanks a lot", "I want a refund"],
    "15550002222": ["hi", "agent please"],
    "15550003333": ["good morning", "what can you do", "bye now"],
}


class OrderAPI(BaseHTTPRequestHandler):
    """The order API the example bot's tool calls: every order is shipped."""

    def do_GET(self) -> None:
        body = b'{"status": "shipped"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def replay(recorded: Recorded, *args: str) -> tuple[int, dict[str, Any], str]:
    out = recorded.folder / "out.json"
    result = CliRunner().invoke(
        app,
        ["replay", "--stages", str(recorded.stages), "--no-progress", "--json", str(out), *args],
        env=recorded.env,
    )
    report = json.loads(out.read_text()) if out.exists() else {}
    return result.exit_code, report, result.output


@contextmanager
def recorded_corpus(workdir: Path, database_url: str, db: sa.Engine, order_api: str) -> Iterator[Recorded]:
    """Three conversations recorded through the Flask route and the worker, AI through the fake OpenAI."""
    with FakeOpenAI(responder=prompt_echo) as fake:
        folder = workdir / "bot"
        stages = write_bot(folder, order_url=order_api)
        settings = load_settings(
            database_url=database_url,
            whatsapp_app_secret=APP_SECRET,
            whatsapp_verify_token=VERIFY_TOKEN,
            whatsapp_access_token=ACCESS_TOKEN,
            ai="openai",
            openai_api_key="sk-test",
            openai_base_url=fake.base_url,
        )
        bot = load_bot(stages)
        clock = Clock()
        client = Webhook(create_app(settings, bot, db=db, clock=clock).test_client())
        worker = Worker(build_runtime(settings, bot), db, settings, clock=clock, name="w0")
        for step in range(4):
            for wa_id, texts in CONVERSATIONS.items():
                if step < len(texts):
                    body = whatsapp_text(
                        texts[step], wa_id=wa_id, name="Ada Lovelace", timestamp=int(clock().timestamp())
                    )
                    assert client.post(body).status_code == 200
            while worker.work_once():
                pass
            clock.advance(60)
        fake.requests.clear()
        env = {"CHATOPS_DATABASE_URL": database_url, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
        yield Recorded(folder, stages, database_url, fake, env)
