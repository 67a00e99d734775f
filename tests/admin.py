"""Test helpers for the admin API: a harness (bot, app, worker, clock) with one API key per role."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from werkzeug.test import TestResponse

from chatops.db.api_keys import ROLES, create_key
from tests.test_worker import Clock, Harness

__all__ = ["ROLES", "AdminHarness", "Clock"]


class AdminHarness(Harness):
    """:class:`tests.test_worker.Harness` plus a key per role (``self.keys[role]``) and :meth:`call`."""

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
