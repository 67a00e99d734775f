"""The admin API: every role on every route (from the OpenAPI document), keys, audit, conversations, errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app as cli
from chatops.config.settings import Settings
from chatops.db.tables import api_keys, audit_log, outbound_messages
from chatops.web.app import create_app
from chatops.web.auth import client_address
from tests.admin import ROLES, AdminHarness

runner = CliRunner()


@pytest.fixture
def admin(tmp_path: Path, database_url: str, db: sa.Engine) -> Iterator[AdminHarness]:
    harness = AdminHarness(tmp_path, database_url, db)
    yield harness
    harness.runtime.variables.runner.close()


def _document() -> dict[str, Any]:
    app = create_app(Settings(database_url="sqlite:///never-opened.db"), None)
    return dict(app.test_client().get("/api/v1/openapi.json").json)


DOCUMENT = _document()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    if method in ("get", "post", "put", "patch", "delete")
]


def _concrete(path: str) -> str:
    """A path of the document with its parameters filled with values that name nothing."""
    return path.removeprefix("/api/v1").replace("{conversation_id}", "999999").replace("{name}", "no-such-key")


def test_the_document_is_openapi_3_1_and_lists_every_api_route() -> None:
    app = create_app(Settings(database_url="sqlite:///never-opened.db"), None)
    documented = {(method, path) for method, path, _ in OPERATIONS}
    routed = set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/") or rule.endpoint.startswith(("openapi", "swagger")):
            continue
        path = rule.rule.replace("<int:", "{").replace("<", "{").replace(">", "}")
        routed |= {(method, path) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
    assert DOCUMENT["openapi"].startswith("3.1")
    assert routed == documented
    for _, _, operation in OPERATIONS:
        assert operation["x-required-role"] in ROLES
        assert operation["security"] == [{"bearer": []}]


def test_the_browsable_page_is_served_locally(admin: AdminHarness) -> None:
    page = admin.client.get("/api/v1/swagger")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "openapi.json" in html
    assert "https://" not in html.split("<body")[0]  # no CDN: scripts and styles come from chatops
    with admin.client.get("/api/v1/swagger/js/swagger-ui-bundle.js") as script:
        assert script.status_code == 200


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_role_on_every_route(admin: AdminHarness, method: str, path: str, operation: dict[str, Any]) -> None:
    needed = ROLES.index(operation["x-required-role"])
    url = _concrete(path)
    missing = admin.call(method, url, role=None, json={})
    assert missing.status_code == 401, missing.json
    assert missing.json["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    assert admin.call(method, url, key="chatops_00000000_" + "x" * 43, json={}).status_code == 401
    for rank, role in enumerate(ROLES):
        answer = admin.call(method, url, role=role, json={})
        if rank < needed:
            assert answer.status_code == 403, (role, answer.json)
            assert answer.json["error"]["code"] == "forbidden"
        else:
            assert answer.status_code not in (401, 403), (role, answer.json)
            assert answer.status_code < 500, answer.json


def test_key_lifecycle_create_use_expire_revoke_rotate(admin: AdminHarness) -> None:
    created = admin.call("POST", "/keys", json={"name": "ops", "role": "viewer", "expires_in_days": 1})
    assert created.status_code == 201, created.json
    secret = created.json["secret"]
    assert secret.startswith(f"chatops_{created.json['key']['prefix']}_")
    with admin.db.connect() as connection:
        stored = connection.execute(sa.select(api_keys.c.hash).where(api_keys.c.name == "ops")).scalar_one()
    assert secret not in stored
    assert len(stored) == 64  # only the SHA-256 is kept
    assert admin.call("GET", "/conversations", key=secret).status_code == 200
    listed = admin.call("GET", "/keys").json["items"]
    assert [k["name"] for k in listed if k["status"] == "active"] == [*[f"{r}-key" for r in ROLES], "ops"]
    assert all("secret" not in k for k in listed)

    admin.clock.advance(timedelta(days=1, seconds=1).total_seconds())
    assert admin.call("GET", "/conversations", key=secret).status_code == 401  # expired

    rotated = admin.call("POST", "/keys/ops/rotate", json={"expires_in_days": 30})
    assert rotated.status_code == 200, rotated.json
    assert admin.call("GET", "/conversations", key=secret).status_code == 401  # the old secret
    new = rotated.json["secret"]
    assert admin.call("GET", "/conversations", key=new).status_code == 200

    assert admin.call("POST", "/keys/ops/revoke").json["status"] == "revoked"
    assert admin.call("GET", "/conversations", key=new).status_code == 401
    assert admin.call("POST", "/keys/ops/rotate", json={}).status_code == 400  # a revoked key stays revoked
    assert admin.call("POST", "/keys", json={"name": "ops", "role": "admin"}).status_code == 400  # name taken


def test_last_used_is_written_at_most_once_a_minute(admin: AdminHarness) -> None:
    def last_used() -> Any:
        with admin.db.connect() as connection:
            return connection.execute(
                sa.select(api_keys.c.last_used_at).where(api_keys.c.name == "viewer-key")
            ).scalar_one()

    start = admin.clock()
    admin.call("GET", "/conversations", role="viewer")
    assert last_used() == start
    admin.clock.advance(30)
    admin.call("GET", "/conversations", role="viewer")
    assert last_used() == start
    admin.clock.advance(31)
    admin.call("GET", "/conversations", role="viewer")
    assert last_used() == admin.clock()


def test_mutating_calls_are_audited_with_outcome_and_client_address(admin: AdminHarness) -> None:
    admin.call("POST", "/keys", json={"name": "n1", "role": "viewer"}, address="10.0.0.7")
    admin.call("POST", "/keys/n1/revoke", role="operator", address="10.0.0.8")  # denied
    admin.call("POST", "/keys/nobody/revoke")  # rejected: 404
    admin.call("GET", "/conversations")  # reads are not audited
    entries = admin.call("GET", "/audit").json["items"]
    assert [(e["actor"], e["action"], e["target"], e["outcome"], e["client_address"]) for e in entries] == [
        ("admin-key", "api.admin.revoke_key_view", "/api/v1/keys/nobody/revoke", "rejected", "127.0.0.1"),
        ("operator-key", "api.admin.revoke_key_view", "/api/v1/keys/n1/revoke", "denied", "10.0.0.8"),
        ("admin-key", "api.admin.create_key_view", "/api/v1/keys", "ok", "10.0.0.7"),
    ]
    assert entries[2]["details"] == {"method": "POST", "status": 201, "name": "n1", "role": "viewer"}
    result = runner.invoke(cli, ["audit", "--database-url", admin.settings.database_url, "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[1:5] == [
        "admin-key",
        "api.admin.revoke_key_view",
        "/api/v1/keys/nobody/revoke",
        "rejected",
    ]


def test_client_address_trusts_only_the_configured_hops() -> None:
    assert client_address("10.0.0.1", "1.1.1.1, 2.2.2.2", trusted_hops=0) == "10.0.0.1"
    assert client_address("10.0.0.1", "1.1.1.1, 2.2.2.2", trusted_hops=1) == "2.2.2.2"
    assert client_address("10.0.0.1", "6.6.6.6, 1.1.1.1, 2.2.2.2", trusted_hops=2) == "1.1.1.1"
    assert client_address("10.0.0.1", "2.2.2.2", trusted_hops=2) == "10.0.0.1"  # fewer entries than proxies
    assert client_address("10.0.0.1", None, trusted_hops=1) == "10.0.0.1"


def test_behind_a_proxy_the_audit_shows_the_forwarded_address(tmp_path: Path, database_url: str, db: sa.Engine) -> None:
    admin = AdminHarness(tmp_path, database_url, db, trusted_proxy_hops=1)
    try:
        admin.call(
            "POST", "/keys", json={"name": "p", "role": "viewer"}, headers={"X-Forwarded-For": "9.9.9.9, 8.8.8.8"}
        )
        with db.connect() as connection:
            assert connection.execute(sa.select(audit_log.c.client_address)).scalar_one() == "8.8.8.8"
    finally:
        admin.runtime.variables.runner.close()


def test_conversations_list_filters_and_pages(admin: AdminHarness) -> None:
    for number in range(5):
        admin.send("hello", wa_id=f"1555000000{number}")
        admin.clock.advance(1)
    admin.drain()
    admin.send("I need a human", wa_id="15550000003")
    admin.drain()
    everything = admin.call("GET", "/conversations").json
    assert len(everything["items"]) == 5
    assert everything["next_cursor"] is None
    seen: list[int] = []
    cursor = None
    for _ in range(5):
        page = admin.call("GET", "/conversations", query_string={"limit": 2, **({"cursor": cursor} if cursor else {})})
        seen += [item["id"] for item in page.json["items"]]
        cursor = page.json["next_cursor"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in everything["items"]]
    human = admin.call("GET", "/conversations", query_string={"mode": "human"}).json["items"]
    assert [(c["user_id"], c["stage"], c["waiting"]) for c in human] == [("15550000003", "handoff", True)]
    assert human[0]["handoff_at"] is not None
    admin.send("hello? anyone?", wa_id="15550000003")
    waiting = admin.call("GET", "/conversations", query_string={"waiting": "true"}).json["items"]
    assert [c["user_id"] for c in waiting] == ["15550000003"]
    assert admin.call("GET", "/conversations", query_string={"stage": "menu"}).json["items"][0]["stage"] == "menu"
    assert admin.call("GET", "/conversations", query_string={"channel": "messenger"}).json["items"] == []


def test_conversation_detail_has_messages_turns_and_delivery_statuses(admin: AdminHarness) -> None:
    admin.send("hello")
    admin.drain()
    with admin.db.begin() as connection:
        connection.execute(
            sa.update(outbound_messages).values(status="failed", error_code=131026, error="undeliverable")
        )
    detail = admin.call("GET", f"/conversations/{admin.conversation_id()}", role="viewer")
    assert detail.status_code == 200, detail.json
    body = detail.json
    assert [(m["direction"], m["status"]) for m in body["messages"]] == [("in", "done"), ("out", "failed")]
    assert body["messages"][1]["error_code"] == 131026
    assert body["messages"][1]["text"].startswith("Hi Ada!")
    assert [(t["stage_before"], t["stage_after"]) for t in body["turns"]] == [(None, "menu")]


def test_errors_have_one_shape(admin: AdminHarness) -> None:
    missing = admin.call("GET", "/conversations/424242")
    assert missing.status_code == 404
    assert missing.json == {"error": {"code": "not_found", "message": "no conversation with id 424242", "hint": None}}
    invalid = admin.call("GET", "/conversations", query_string={"limit": 0})
    assert invalid.status_code == 422
    assert invalid.json["error"]["code"] == "invalid_request"
    assert invalid.json["error"]["fields"][0]["field"] == "limit"
    bad_body = admin.call("POST", "/keys", json={"name": "x", "role": "root"})
    assert bad_body.status_code == 422
    assert bad_body.json["error"]["fields"][0]["field"] == "role"
    too_big = admin.call("GET", f"/conversations/{2**63}")  # past a BIGINT: was a 500 (OverflowError on SQLite)
    assert (too_big.status_code, too_big.json["error"]["fields"][0]["field"]) == (422, "conversation_id")
    cursor = admin.call("GET", "/conversations", query_string={"cursor": "nonsense"})
    assert (cursor.status_code, cursor.json["error"]["code"]) == (400, "invalid_cursor")


def test_cli_keys_and_conversations(admin: AdminHarness) -> None:
    url = admin.settings.database_url
    created = runner.invoke(cli, ["keys", "create", "--name", "cli-key", "--role", "operator", "--database-url", url])
    assert created.exit_code == 0, created.output
    secret = created.stdout.splitlines()[1]
    assert admin.call("GET", "/conversations", key=secret).status_code == 200
    listed = runner.invoke(cli, ["keys", "list", "--database-url", url])
    assert "cli-key" in listed.stdout
    assert secret not in listed.stdout
    rotated = runner.invoke(cli, ["keys", "rotate", "cli-key", "--json", "--database-url", url])
    assert admin.call("GET", "/conversations", key=secret).status_code == 401
    revoked = runner.invoke(cli, ["keys", "revoke", "cli-key", "--database-url", url])
    assert revoked.stdout == "Revoked API key 'cli-key'.\n"
    assert rotated.exit_code == 0
    unknown = runner.invoke(cli, ["keys", "revoke", "nobody", "--database-url", url])
    assert (unknown.exit_code, unknown.stderr.splitlines()[0]) == (1, "Error: no API key named 'nobody'")

    admin.send("hello")
    admin.drain()
    listed = runner.invoke(cli, ["conversations", "list", "--database-url", url])
    assert listed.exit_code == 0, listed.output
    assert "15550001111" not in listed.stdout or "Ada" in listed.stdout
    shown = runner.invoke(cli, ["conversations", "show", str(admin.conversation_id()), "--database-url", url])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert any(line.endswith("← user: hello  [done]") for line in lines)
    assert any("→ bot: Hi Ada!" in line and line.endswith("[pending]") for line in lines)
    assert "None → menu" in shown.stdout
