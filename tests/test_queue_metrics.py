"""Queue gauges on /metrics: backlog and age of the oldest due row, read at most every few seconds for all scrapes."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.web.app import create_app
from chatops.web.queue_metrics import QueueCollector
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


def gauge(text: str, name: str, queue: str, channel: str = "whatsapp") -> float:
    match = re.search(rf'^{name}\{{channel="{channel}",queue="{queue}"\}} (\S+)$', text, re.MULTILINE)
    assert match, text
    return float(match.group(1))


def queue_queries(db: sa.Engine) -> list[str]:
    seen: list[str] = []

    def capture(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "GROUP BY" in statement:
            seen.append(statement)

    sa.event.listen(db, "before_cursor_execute", capture)
    return seen


def test_backlog_and_oldest_due_age_per_queue(database_url: str, db: sa.Engine) -> None:
    clock = Clock()
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
    )
    app = create_app(settings, None, db=db, clock=clock)
    client = app.test_client()
    webhook = Webhook(client)
    assert webhook.send_text("one", message_id="wamid.Q1").status_code == 200
    assert webhook.send_text("two", message_id="wamid.Q2", wa_id="15550009999").status_code == 200
    clock.now = NOW + timedelta(seconds=90)
    queries = queue_queries(db)

    text = client.get("/metrics").get_data(as_text=True)
    assert gauge(text, "chatops_queue_backlog", "inbound") == 2
    assert gauge(text, "chatops_queue_oldest_due_seconds", "inbound") == 90
    assert gauge(text, "chatops_queue_backlog", "outbound") == 0
    assert gauge(text, "chatops_queue_backlog", "inbound", channel="messenger") == 0  # always present: alerts see 0

    for _ in range(5):
        client.get("/metrics")
    assert gauge(text, "chatops_queue_backlog", "sending") == 0
    assert gauge(text, "chatops_queue_oldest_due_seconds", "sending") == 0
    assert len(queries) == 3  # inbound + outbound + sending, once: later scrapes share the figures


def test_figures_are_refreshed_after_max_age(database_url: str, db: sa.Engine) -> None:
    ticks = [0.0]
    collector = QueueCollector(db, clock=lambda: NOW, max_age=5, monotonic=lambda: ticks[0])
    queries = queue_queries(db)
    collector.depths()
    ticks[0] = 4.9
    collector.depths()
    assert len(queries) == 3
    ticks[0] = 5.0
    collector.depths()
    assert len(queries) == 6


def test_a_database_that_does_not_answer_leaves_the_gauges_out(caplog: Any) -> None:
    engine = create_db_engine("postgresql://nobody@127.0.0.1:1/none")
    registry = CollectorRegistry()
    registry.register(QueueCollector(engine, clock=lambda: NOW))
    try:
        text = generate_latest(registry).decode()
        generate_latest(registry)
    finally:
        engine.dispose()
    assert "chatops_queue" not in text
    assert [r.getMessage() for r in caplog.records].count("queue gauges unavailable: OperationalError") == 1
