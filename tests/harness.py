"""A bot, its Flask app and workers on one database and one hand-moved clock: the in-process test harness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask import Flask

from chatops.config.bot import load_bot
from chatops.config.settings import Settings, load_settings
from chatops.engine.runtime import build_runtime
from chatops.engine.turn import BotRuntime
from chatops.engine.worker import Worker
from chatops.web.app import create_app
from tests.bots import write_bot
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class Clock:
    """A clock tests move by hand; thread-safe enough for reads."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Harness:
    """A bot, its Flask app and workers sharing one database and one clock."""

    def __init__(self, folder: Path, database_url: str, db: sa.Engine, **overrides: Any) -> None:
        self.clock = Clock()
        self.db = db
        self.settings: Settings = load_settings(
            database_url=database_url,
            whatsapp_app_secret=APP_SECRET,
            whatsapp_verify_token=VERIFY_TOKEN,
            whatsapp_access_token=ACCESS_TOKEN,
            ai="offline",
            **overrides,
        )
        self.bot = load_bot(write_bot(folder))
        self.runtime: BotRuntime = build_runtime(self.settings, self.bot)
        self.app: Flask = create_app(self.settings, self.bot, db=db, clock=self.clock)
        self.webhook = Webhook(self.app.test_client())

    def send(self, text: str, *, wa_id: str = "15550001111", **options: Any) -> None:
        timestamp = int(self.clock().timestamp())
        response = self.webhook.post(whatsapp_text(text, wa_id=wa_id, timestamp=timestamp, **options))
        assert response.status_code == 200, response.json

    def worker(self, name: str = "w0", runtime: BotRuntime | None = None) -> Worker:
        return Worker(runtime or self.runtime, self.db, self.settings, clock=self.clock, name=name)

    def drain(self, worker: Worker | None = None) -> int:
        worker = worker or self.worker()
        count = 0
        while worker.work_once():
            count += 1
            assert count < 1000
        return count

    def rows(self, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
        with self.db.connect() as connection:
            selected = [table.c[name] for name in columns]
            return [tuple(row) for row in connection.execute(sa.select(*selected).order_by(table.c.id))]
