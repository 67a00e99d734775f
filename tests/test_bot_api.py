"""/api/v1/bot (definition, preview, reload in every process) and /api/v1/stats."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from chatops.db.api_keys import create_key
from chatops.db.bot_reloads import latest_reload_id
from chatops.db.tables import outbound_messages
from chatops.engine.reload import ReloadWatch, RuntimeHolder
from chatops.engine.runtime import build_runtime
from chatops.web.app import create_app
from tests.admin import AdminHarness
from tests.processes import ServeProcess


@pytest.fixture
def admin(tmp_path: Path, database_url: str, db: sa.Engine) -> Iterator[AdminHarness]:
    harness = AdminHarness(tmp_path, database_url, db)
    yield harness
    harness.runtime.variables.runner.close()


def test_the_definition_lists_stages_and_template_versions(admin: AdminHarness) -> None:
    bot = admin.call("GET", "/bot", role="viewer").json
    assert bot["start"] == "welcome"
    assert bot["version"] == admin.bot.version
    assert {s["name"]: s["targets"] for s in bot["stages"]}["welcome"] == ["menu"]
    assert len(bot["templates"]["welcome.j2"]) == 12


def test_a_template_preview_renders_with_sample_variables(admin: AdminHarness) -> None:
    answer = admin.call(
        "POST",
        "/bot/preview",
        role="viewer",
        json={"template": "welcome.j2", "variables": {"user": {"name": "Grace"}, "message": {"kind": "text"}}},
    )
    assert answer.status_code == 200, answer.json
    assert answer.json["text"] == "Hi Grace! Welcome to Test Shop. You sent a text."
    outside = admin.call("POST", "/bot/preview", role="viewer", json={"template": "../stages.yaml"})
    assert outside.status_code == 404  # only the bot's own templates ("/" was a 500)
    missing = admin.call("POST", "/bot/preview", role="viewer", json={"template": "welcome.j2"})
    assert missing.status_code == 422
    assert missing.json["error"]["code"] == "template_error"
    assert "user" in missing.json["error"]["message"]


def test_a_good_reload_reaches_every_process_and_a_bad_one_none(admin: AdminHarness, db: sa.Engine) -> None:
    other = create_app(admin.settings, admin.bot, db=db, clock=admin.clock).test_client()  # a second web process
    headers = {"Authorization": f"Bearer {admin.keys['viewer']}"}
    holder = RuntimeHolder(
        admin.runtime, ReloadWatch(db, admin.settings, baseline=True), lambda bot: build_runtime(admin.settings, bot)
    )
    worker = admin.worker()
    worker.runtime_source = holder.current
    assert other.get("/api/v1/bot", headers=headers).status_code == 200  # its baseline
    before = other.get("/api/v1/bot", headers=headers).json["templates"]["welcome.j2"]

    welcome = admin.bot.path.parent / "templates" / "welcome.j2"
    welcome.write_text("Hello {{ user.name or 'there' }}, this is {{ company }} v2.")
    reloaded = admin.call("POST", "/bot/reload")
    assert reloaded.status_code == 200, reloaded.json
    assert reloaded.json["reload_id"] == latest_reload_id(db) == 1
    time.sleep(2.1)  # the other process looks at most every 2 seconds
    after = other.get("/api/v1/bot", headers=headers).json["templates"]["welcome.j2"]
    assert after != before
    worker.runtime = worker.runtime_source()
    admin.send("hello")
    admin.drain(worker)
    assert admin.rows(outbound_messages, "body")[-1][0]["text"] == "Hello Ada, this is Test Shop v2."

    welcome.write_text("Hello {{ customer_number }}")  # no such variable: the linter refuses it
    refused = admin.call("POST", "/bot/reload")
    assert refused.status_code == 422
    assert refused.json["error"]["code"] == "bot_invalid"
    assert "welcome.j2" in refused.json["error"]["message"]
    assert "customer_number" in refused.json["error"]["message"]
    assert latest_reload_id(db) == 1  # no process is told to load it
    time.sleep(2.1)
    assert other.get("/api/v1/bot", headers=headers).json["version"] == reloaded.json["version"]
    assert admin.call("GET", "/audit").json["items"][0]["outcome"] == "rejected"
    holder.close()


def test_stats_per_day_failures_and_waiting(admin: AdminHarness) -> None:
    admin.send("hello")
    admin.drain()
    admin.send("I need a human")
    admin.drain()
    with admin.db.begin() as connection:
        connection.execute(
            sa.update(outbound_messages).where(outbound_messages.c.id == 1).values(status="failed", error_code=131047)
        )
    admin.clock.advance(600)
    stats = admin.call("GET", "/stats", role="viewer", query_string={"days": 2}).json
    today = stats["days"][-1]
    assert (today["messages_in"], today["messages_out"], today["turns"]) == (2, 2, 2)
    assert stats["days"][0]["messages_in"] == 0
    assert stats["failures_by_error_code"] == {"131047": 1}
    assert stats["waiting"]["conversations"] == 1
    assert stats["waiting"]["longest_seconds"] == 600


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql"])
def test_reload_in_two_server_processes_good_then_bad(
    serve: Callable[..., ServeProcess],
    bot_dir: Path,
    database_url: str,
    db: sa.Engine,
) -> None:
    key = create_key(db, name="reloader", role="admin", now=datetime.now(UTC)).secret
    # Two serve processes on one host: each its own instance name (a second one under a name in use refuses to start).
    first, second = serve(database_url, CHATOPS_INSTANCE="web-1"), serve(database_url, CHATOPS_INSTANCE="web-2")
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30) as client:

        def version(server: ServeProcess) -> str:
            return str(client.get(f"{server.url}/api/v1/bot").json()["version"])

        before = version(first)
        assert version(second) == before
        welcome = bot_dir / "templates" / "welcome.j2"
        welcome.write_text(welcome.read_text() + "\n{# reloaded #}\n")
        reloaded = client.post(f"{first.url}/api/v1/bot/reload")
        assert reloaded.status_code == 200, reloaded.text
        after = reloaded.json()["version"]
        assert after != before
        deadline = time.monotonic() + 10
        while version(second) != after and time.monotonic() < deadline:
            time.sleep(0.2)
        assert version(second) == after

        welcome.write_text("{{ no_such_variable }}")
        refused = client.post(f"{second.url}/api/v1/bot/reload")
        assert refused.status_code == 422
        assert "no_such_variable" in refused.json()["error"]["message"]
        time.sleep(2.5)
        assert (version(first), version(second)) == (after, after)
