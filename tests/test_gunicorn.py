"""``chatops serve --server gunicorn``: web processes, one background process, readiness, reload, shutdown.

A real Gunicorn master is spawned (``python -m chatops serve --server gunicorn --processes 2``) on SQLite and
PostgreSQL in front of the loopback fakes; the tests look at HTTP answers, the fake Graph API, the database and
the process tree (``/proc``).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.metrics import sample
from tests.processes import (
    OPENAI_KEY,
    Fakes,
    ServeProcess,
    children,
    message,
    post,
    reads,
    readyz_answer,
    sends,
    sent_text,
    wait_for,
)
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def background_pids(pid: int) -> list[int]:
    return [child for child, command in children(pid).items() if "chatops.engine.background_process" in command]


def web_pids(pid: int) -> list[int]:
    return [child for child, command in children(pid).items() if "background_process" not in command]


def readyz(server: ServeProcess) -> httpx.Response:
    return httpx.get(f"{server.url}/readyz", timeout=5)


def scrape(server: ServeProcess) -> str:
    """/metrics on a new connection: Gunicorn hands it to whichever web process accepts first."""
    response = httpx.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    return response.text


# Pool sizes: each web process keeps --threads (8) + 4 connections, the background process --workers (4) + 4.
SERVER_POOL = 2 * (8 + 4) + (4 + 4)


@pytest.fixture
def gunicorn(bot_dir: Path, fakes: Fakes) -> Iterator[Callable[..., ServeProcess]]:
    """Starts ``chatops serve --server gunicorn --processes 2``; waits until /readyz is 200; killed at the end."""
    started: list[ServeProcess] = []

    def start(database_url: str, *args: str) -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
        env |= {
            "CHATOPS_DATABASE_URL": database_url,
            "CHATOPS_WHATSAPP_APP_SECRET": APP_SECRET,
            "CHATOPS_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "CHATOPS_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
            "CHATOPS_GRAPH_API_URL": fakes.graph.graph_api_url,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": fakes.openai.base_url,
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
            # serve's private directory (status file, metrics) goes in the test's own: a killed master leaves it
            "TMPDIR": str(bot_dir),
        }
        server = ServeProcess(
            bot_dir, env, name=f"gunicorn-{len(started)}", args=("--server", "gunicorn", "--processes", "2", *args)
        )
        started.append(server)
        server.start()
        wait_for(lambda: readyz_answer(server, 200), timeout=20, what="/readyz 200", server=server)
        return server

    try:
        yield start
    finally:
        for server in started:
            if server.process is not None and server.process.poll() is None:
                for child in children(server.process.pid):
                    os.kill(child, signal.SIGKILL)
            server.kill()


def test_gunicorn_answers_once_with_one_background_process(
    database_url: str, db: sa.Engine, fakes: Fakes, gunicorn: Callable[..., ServeProcess]
) -> None:
    server = gunicorn(database_url)
    assert server.process is not None
    master = server.process.pid
    assert len(web_pids(master)) == 2
    assert len(background_pids(master)) == 1, children(master)

    with httpx.Client(timeout=10) as client:
        hello = message("hello", wa_id="15550100001", message_id="wamid.GUNICORN-1")
        assert post(client, server.url, hello, signed=False).status_code == 401
        # The same message delivered 20 times at once lands on both web processes: stored and answered once.
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: post(client, server.url, hello).status_code, range(20)))
        assert answers == [200] * 20
        wait_for(lambda: "wamid.GUNICORN-1" in reads(fakes.graph), timeout=15, what="the welcome", server=server)
    time.sleep(0.5)  # a second answer, if any, would arrive now
    assert len(sends(fakes.graph, "15550100001")) == 1
    assert "Welcome to Northwind support." in sent_text(sends(fakes.graph, "15550100001")[0])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_any_web_process_exports_the_whole_servers_metrics(
    database_url: str, fakes: Fakes, gunicorn: Callable[..., ServeProcess]
) -> None:
    server = gunicorn(database_url)
    with httpx.Client(timeout=10) as client:
        for number, text in enumerate(("hello", "where is my parcel"), start=1):
            body = message(text, wa_id="15550100002", message_id=f"wamid.M-{number}")
            assert post(client, server.url, body).status_code == 200
            wait_for(
                lambda n=number: len(sends(fakes.graph, "15550100002")) == n, timeout=15, what="a reply", server=server
            )
    # Turns, AI calls and sends ran in the background process, which serves no HTTP; the webhooks in either web
    # process. Every scrape, whichever web process answers it, shows all of them, each counted once.
    wait_for(
        lambda: (
            sample(scrape(server), "chatops_outbound_messages_total", channel="whatsapp", outcome="sent", error_code="")
            == 2
        ),
        timeout=5,
        what="the second send counted",
    )
    for _ in range(6):
        text = scrape(server)
        assert sample(text, "chatops_webhook_requests_total", channel="whatsapp", status="200") == 2
        assert sample(text, "chatops_turns_total", outcome="ok") == 2
        assert sample(text, "chatops_turn_seconds_count") == 2
        assert sample(text, "chatops_ai_request_seconds_count", call="reply") >= 1
        assert sample(text, "chatops_ai_tokens_total", call="reply", kind="completion") > 0
        assert sample(text, "chatops_outbound_messages_total", channel="whatsapp", outcome="sent", error_code="") == 2
        assert sample(text, "chatops_db_pool_size") == SERVER_POOL  # the live processes' pools, summed
        assert sample(text, "chatops_queue_backlog", queue="inbound", channel="whatsapp") == 0
    assert httpx.get(f"{server.url}/metrics", headers={"X-Forwarded-For": "203.0.113.7"}).status_code == 403


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_dead_background_process_is_a_503_and_is_started_again(
    database_url: str, gunicorn: Callable[..., ServeProcess]
) -> None:
    server = gunicorn(database_url)
    assert server.process is not None
    (first,) = background_pids(server.process.pid)
    os.kill(first, signal.SIGKILL)
    not_ready = wait_for(lambda: readyz_answer(server, 503), timeout=15, what="/readyz 503", server=server)
    assert "background process" in not_ready.text
    wait_for(lambda: readyz_answer(server, 200), timeout=20, what="ready again", server=server)
    assert background_pids(server.process.pid) not in ([], [first])
    assert "background process (workers and sender) exited with code -9; starting it again in 1s" in server.tail(80)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sighup_reloads_the_bot_without_dropping_a_request(
    database_url: str, bot_dir: Path, fakes: Fakes, gunicorn: Callable[..., ServeProcess]
) -> None:
    server = gunicorn(database_url)
    assert server.process is not None
    master = server.process.pid
    old_web, old_background = set(web_pids(master)), background_pids(master)
    stages = bot_dir / "stages.yaml"
    original = stages.read_text()

    # A broken bot definition is refused: the old processes keep serving it.
    stages.write_text(original.replace("start: welcome", "start: welcom"))
    server.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload refused" in server.tail(80), timeout=10, what="the refusal", server=server)
    assert set(web_pids(master)) == old_web

    welcome = bot_dir / "templates" / "welcome.j2"
    welcome.write_text(welcome.read_text().replace("Welcome to {{ company }} support.", "Welcome back, reloaded."))
    stages.write_text(original)
    statuses: list[int] = []
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 3
        server.process.send_signal(signal.SIGHUP)
        n = 0
        while time.monotonic() < deadline:  # requests keep coming during the reload: none may fail
            n += 1
            body = message("hi", wa_id=f"1555020{n:04d}", message_id=f"wamid.RELOAD-{n}")
            statuses.append(post(client, server.url, body).status_code)
        wait_for(lambda: not (set(web_pids(master)) & old_web), timeout=30, what="new web processes", server=server)
        assert len(web_pids(master)) == 2
        wait_for(lambda: background_pids(master) not in ([], old_background), timeout=10, what="a new background")
        assert set(statuses) == {200}, statuses
        fresh = message("hello", wa_id="15550299999", message_id="wamid.RELOAD-AFTER")
        assert post(client, server.url, fresh).status_code == 200
        wait_for(lambda: "wamid.RELOAD-AFTER" in reads(fakes.graph), timeout=15, what="the reply", server=server)
    assert "Welcome back, reloaded." in sent_text(sends(fakes.graph, "15550299999")[0])
    # The processes the reload replaced leave their counts (no reset, none twice) and take their pools along.
    text = scrape(server)
    assert sample(text, "chatops_webhook_requests_total", channel="whatsapp", status="200") == len(statuses) + 1
    wait_for(lambda: sample(scrape(server), "chatops_db_pool_size") == SERVER_POOL, timeout=70, what="old pools gone")


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sigusr2_is_refused_and_the_server_goes_on(database_url: str, gunicorn: Callable[..., ServeProcess]) -> None:
    # Gunicorn's binary upgrade re-executes `chatops serve` beside the running master: not supported (SIGHUP is).
    server = gunicorn(database_url)
    assert server.process is not None
    before = children(server.process.pid)
    server.process.send_signal(signal.SIGUSR2)
    refusal = "Error: SIGUSR2 (Gunicorn's binary upgrade) is not supported: the running server goes on unchanged"
    wait_for(lambda: refusal in server.tail(20), timeout=30, what="the refusal", server=server)
    wait_for(lambda: children(server.process.pid) == before, timeout=10, what="the second master gone", server=server)
    assert readyz(server).status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sigterm_stops_every_process(database_url: str, gunicorn: Callable[..., ServeProcess]) -> None:
    server = gunicorn(database_url)
    assert server.process is not None
    everyone = list(children(server.process.pid))
    server.process.terminate()
    assert server.process.wait(timeout=40) == 0
    for pid in everyone:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_the_wsgi_entry_reads_settings_from_the_environment(
    database_url: str, bot_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chatops.web.wsgi import create_app

    monkeypatch.chdir(bot_dir)
    monkeypatch.setenv("CHATOPS_DATABASE_URL", database_url)
    monkeypatch.setenv("CHATOPS_WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
    client = create_app().test_client()
    challenge = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "42"}
    assert client.get("/webhooks/whatsapp", query_string=challenge).get_data(as_text=True) == "42"
    assert client.get("/readyz").status_code == 200
