"""Test helpers for the admin API: a harness (bot, app, worker, clock) with one API key per role, and the
operator's side of a handoff (the real sender delivering to the fake Graph API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from werkzeug.test import TestResponse

from chatops.channels.graph import GraphClient
from chatops.db.api_keys import ROLES, create_key
from chatops.engine.sender import OutboxSender
from tests.fakes.graph_api import FakeGraphAPI
from tests.harness import Clock, Harness
from tests.webhook import ACCESS_TOKEN

__all__ = ["ROLES", "AdminHarness", "Clock"]


class AdminHarness(Harness):
    """:class:`tests.harness.Harness` plus a key per role (``self.keys[role]``) and :meth:`call`."""

    def __init__(self, folder: Path, database_url: str, db: sa.Engine, **overrides: Any) -> None:
        super().__init__(folder, database_url, db, **overrides)
        self.client = self.app.test_client()
        self.keys = {
            role: create_key(db, name=f"{role}-key", role=role, now=self.clock()).secret  # type: ignore[arg-type]
            for role in ROLES
        }

    def call(
        self,
        method: str,
        path: str,
        *,
        role: str | None = "admin",
        key: str | None = None,
        address: str = "127.0.0.1",
        **options: Any,
    ) -> TestResponse:
        """``method path`` under /api/v1 with the key of ``role`` (or ``key``; neither: no Authorization)."""
        secret = key if key is not None else self.keys[role] if role else None
        headers = {**options.pop("headers", {}), **({"Authorization": f"Bearer {secret}"} if secret else {})}
        return self.client.open(
            f"/api/v1{path}", method=method, headers=headers, environ_base={"REMOTE_ADDR": address}, **options
        )

    def conversation_id(self, wa_id: str = "15550001111") -> int:
        from chatops.db.tables import conversations

        with self.db.connect() as connection:
            return int(
                connection.execute(sa.select(conversations.c.id).where(conversations.c.user_id == wa_id)).scalar_one()
            )


def deliver(admin: AdminHarness) -> None:
    """Run the real sender against the fake Graph API until the outbox is empty; the texts it sent."""
    with httpx.Client() as http:
        sender = OutboxSender(
            admin.settings,
            admin.db,
            GraphClient.from_settings(admin.settings, http),
            clock=admin.clock,
            token_source=lambda channel: ACCESS_TOKEN,
            concurrency=1,
        )
        try:
            for _ in range(20):
                if not sender.send_due():
                    break
        finally:
            sender.close()


def sent_texts(graph: FakeGraphAPI) -> list[str]:
    texts = []
    for request in graph.requests:
        body = request.body or {}
        if body.get("type") == "text":
            texts.append(body["text"]["body"])
        elif body.get("type") == "template":
            texts.append(f"template:{body['template']['name']}")
    return texts


def handed_off(admin: AdminHarness) -> int:
    admin.send("hello")
    admin.drain()
    admin.send("I need a human")
    admin.drain()
    return admin.conversation_id()
