"""Rate limits: per API key (429 + Retry-After), bad keys per client address, per end user on inbound processing;
memory:// and the local Redis, and two server processes sharing Redis."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from chatops.db.api_keys import create_key
from chatops.db.tables import inbound_messages, outbound_messages, turns
from chatops.engine.flood import shared_storage
from tests.admin import AdminHarness
from tests.processes import ServeProcess

REDIS = "redis://127.0.0.1:6379"
STORAGES = ["memory://", REDIS]


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping())
    except Exception:
        return False


@pytest.fixture(params=STORAGES)
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == REDIS and not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    return str(request.param)


@pytest.fixture
def make_admin(tmp_path: Path, database_url: str, db: sa.Engine) -> Iterator[Callable[..., AdminHarness]]:
    made: list[AdminHarness] = []

    def make(**settings: object) -> AdminHarness:
        folder = tmp_path / f"bot{len(made)}"
        folder.mkdir()
        harness = AdminHarness(folder, database_url, db, **settings)
        made.append(harness)
        return harness

    yield make
    for harness in made:
        harness.runtime.variables.runner.close()


def address() -> str:
    """A client address no other test (or earlier run on the same Redis) has used."""
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


def test_each_key_has_its_own_limit_then_429_with_retry_after(
    make_admin: Callable[..., AdminHarness], storage: str
) -> None:
    admin = make_admin(rate_limit_storage=storage, api_rate_limit="3/minute")
    answers = [admin.call("GET", "/conversations", role="viewer").status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    limited = admin.call("GET", "/conversations", role="viewer")
    assert limited.json["error"]["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert admin.call("GET", "/conversations", role="operator").status_code == 200  # another key


def test_bad_keys_are_limited_per_client_address(make_admin: Callable[..., AdminHarness], storage: str) -> None:
    admin = make_admin(rate_limit_storage=storage, api_bad_key_limit="3/minute")
    attacker, colleague = address(), address()
    wrong = "chatops_00000000_" + "x" * 43
    answers = [admin.call("GET", "/conversations", key=wrong, address=attacker).status_code for _ in range(4)]
    assert answers == [401, 401, 401, 429]
    # From that address even a good key waits now (no key lookup while limited); elsewhere nothing changed.
    assert admin.call("GET", "/conversations", role="viewer", address=attacker).status_code == 429
    assert admin.call("GET", "/conversations", role="viewer", address=colleague).status_code == 200
    assert admin.call("GET", "/conversations", role=None, address=colleague).status_code == 401


def test_a_flooding_user_gets_one_slow_down_reply_and_the_excess_skips_the_ai(
    make_admin: Callable[..., AdminHarness], storage: str
) -> None:
    shared_storage(storage).reset()  # memory:// is per process: earlier tests' counts go
    admin = make_admin(rate_limit_storage=storage, debounce_seconds=0)
    text = admin.bot.path.read_text().replace(
        "  max_replies: 2\n",
        "  max_replies: 2\n  rate_limit:\n    messages: 2/minute\n    reply: Slow down please, {{ user.name }}.\n",
    )
    admin.bot.path.write_text(text)
    from chatops.config.bot import load_bot
    from chatops.engine.runtime import build_runtime

    admin.runtime.variables.runner.close()
    admin.bot = load_bot(admin.bot.path)
    admin.runtime = build_runtime(admin.settings, admin.bot)
    worker = admin.worker()
    worker.flood.namespace = secrets.token_hex(4)  # apart from other runs on the same Redis
    for number in range(5):
        admin.send(f"message {number}")
        admin.drain(worker)
    assert admin.rows(inbound_messages, "status") == [("done",), ("done",), ("skipped",), ("skipped",), ("skipped",)]
    assert len(admin.rows(turns, "id")) == 2  # the excess never reached the AI
    texts = [body["text"] for (body,) in admin.rows(outbound_messages, "body")]
    assert texts.count("Slow down please, Ada.") == 1
    admin.send("hello", wa_id="15550009999")  # another user is not limited
    admin.drain(worker)
    assert admin.rows(inbound_messages, "status")[-1] == ("done",)


@pytest.mark.slow
def test_two_server_processes_share_the_limits_through_redis(
    serve: Callable[..., ServeProcess],
    database_url: str,
    db: sa.Engine,
) -> None:
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    from datetime import UTC, datetime

    key = create_key(db, name=f"shared-{secrets.token_hex(3)}", role="viewer", now=datetime.now(UTC)).secret
    settings = {"CHATOPS_RATE_LIMIT_STORAGE": REDIS, "CHATOPS_API_RATE_LIMIT": "4/minute"}
    # Two serve processes on one host: each its own instance name (a second one under a name in use refuses to start).
    first = serve(database_url, CHATOPS_INSTANCE="web-1", **settings)
    second = serve(database_url, CHATOPS_INSTANCE="web-2", **settings)
    statuses = []
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        for index in range(6):
            server = (first, second)[index % 2]
            statuses.append(client.get(f"{server.url}/api/v1/conversations").status_code)
    assert statuses == [200, 200, 200, 200, 429, 429]
