"""Test helpers for the operator console: the admin harness plus one staff account per role and logged-in clients."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from chatops.db.staff import create_account
from tests.admin import ROLES, AdminHarness

PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def staff_email(role: str) -> str:
    return f"{role}@shop.example"


class ConsoleHarness(AdminHarness):
    """:class:`tests.admin.AdminHarness` plus a staff account per role (``viewer@shop.example`` …)."""

    def __init__(self, folder: Path, database_url: str, db: sa.Engine, **overrides: Any) -> None:
        super().__init__(folder, database_url, db, **overrides)
        for role in ROLES:
            create_account(db, email=staff_email(role), password=PASSWORD, role=role, now=self.clock())

    def browser(self, address: str = "127.0.0.1") -> FlaskClient:
        """A new client (its own cookie jar): a browser."""
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address
        return client

    def login(self, role: str | None, *, password: str = PASSWORD, client: FlaskClient | None = None) -> FlaskClient:
        """A client logged in as the staff member of ``role`` (None: logged out)."""
        client = client or self.browser()
        if role is None:
            return client
        response = self.post_form(
            client, "/console/login", "/console/login", {"email": staff_email(role), "password": password}
        )
        assert response.status_code == 302, response.text
        return client

    @staticmethod
    def token(client: FlaskClient, page: str) -> str:
        page_response = client.get(page)
        found = _TOKEN.search(page_response.text)
        assert found, f"no CSRF token on {page} ({page_response.status_code})"
        return found.group(1)

    def post_form(
        self, client: FlaskClient, page: str, action: str, data: dict[str, str] | None = None, *, csrf: bool = True
    ) -> TestResponse:
        """POST ``data`` to ``action`` as the form on ``page`` would (with its CSRF token unless ``csrf`` is off)."""
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.token(client, page)
        return client.post(action, data=form)
