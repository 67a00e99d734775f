"""``chatops serve --server gunicorn``: web processes, one background process, readiness, reload, shutdown.

A real Gunicorn master is spawned (``python -m chatops serve --server gunicorn --processes 2``) on SQLite and
PostgreSQL in front of the loopback fakes; the tests look at HTTP answers, the fake Graph API, the database and
the process tree (``/proc``).
"""

from __future__ import annotations

import json
import os
import re
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
    WORKERS,
    Fakes,
    Meta,
    ServeProcess,
    children,
    held_leases,
    message,
    post,
    reads,
    readyz_answer,
    reply_counts,
    sending_rows,
    sends,
    sent_text,
    serve_env,
    unanswered,
    wait_for,
)
from tests.webhook import VERIFY_TOKEN

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


# Pool sizes: each web process keeps min(--threads, 8) + 4 connections (32 threads by default: the cap holds), the
# background process --workers (4) + 4.
SERVER_POOL = 2 * (8 + 4) + (4 + 4)


# A lease far longer than any test: what a background process takes back is taken back by its instance name (the
# restart recovery of docs/operations.md), never because a lease ran out.
LONG_LEASE = {"CHATOPS_LEASE_SECONDS": "60"}


def model_calls(fakes: Fakes, text: str) -> int:
    """How many requests to the model carried ``text`` (a user's message: once per time its turn was worked)."""
    return sum(text in json.dumps(request.body) for request in fakes.openai.requests)


def within(seconds: float, condition: Callable[[], bool]) -> bool:
    """Whether ``condition`` becomes true within ``seconds`` (polled every 50 ms)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def gunicorn(bot_dir: Path, fakes: Fakes) -> Iterator[Callable[..., ServeProcess]]:
    """Starts ``chatops serve --server gunicorn --processes 2`` (``settings``: more environment variables); waits
    until /readyz is 200; killed at the end."""
    started: list[ServeProcess] = []

    def start(database_url: str, *args: str, **settings: str) -> ServeProcess:
        # serve's private directory (status file, metrics) goes in the test's own: a killed master leaves it
        env = serve_env(database_url, fakes, TMPDIR=str(bot_dir), **settings)
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
def test_a_killed_background_process_is_a_503_and_its_replacement_takes_its_sends_back(
    database_url: str, db: sa.Engine, fakes: Fakes, gunicorn: Callable[..., ServeProcess]
) -> None:
    server = gunicorn(database_url, **LONG_LEASE)
    assert server.process is not None
    (first,) = background_pids(server.process.pid)
    users = [f"15550320{i:03d}" for i in range(3)]
    with httpx.Client(timeout=10) as client:
        meta = Meta(client)
        meta.url = server.url
        fakes.graph.hold()
        for u in users:
            meta.deliver(f"wamid.K-{u}", message("hello", wa_id=u, message_id=f"wamid.K-{u}"))
        wait_for(lambda: sending_rows(db) > 0, timeout=15, what="welcomes in flight", server=server)
        in_flight = sending_rows(db)
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        fakes.graph.release()
        not_ready = wait_for(lambda: readyz_answer(server, 503), timeout=15, what="/readyz 503", server=server)
        assert "background process" in not_ready.text
        wait_for(lambda: readyz_answer(server, 200), timeout=20, what="ready again", server=server)
        wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=30, what="every welcome", server=server)
        elapsed = time.monotonic() - killed
    print(f"\nSIGKILL of the background process with {in_flight} send(s) in flight: all sent {elapsed:.1f}s later")
    assert background_pids(server.process.pid) not in ([], [first])
    assert "background process (workers and sender) exited with code -9; starting it again in 1s" in server.tail(80)
    # Taken back at once by the replacement (same instance name), not when the 60 s lease would have run out.
    # (A welcome turn may have been running too: its conversation is taken back as well.)
    assert re.search(rf"took back \d+ conversation\(s\) and {in_flight} reply\(ies\)", server.log.read_text())
    assert elapsed < 30
    counts = reply_counts(db, fakes.graph)
    assert 0 not in counts.values()
    assert sum(n - 1 for n in counts.values()) <= in_flight  # only a send in flight at the kill may go out twice


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
def test_sighup_with_turns_and_sends_in_flight_works_each_once(
    database_url: str, db: sa.Engine, fakes: Fakes, gunicorn: Callable[..., ServeProcess]
) -> None:
    server = gunicorn(database_url, **LONG_LEASE)
    assert server.process is not None
    master = server.process.pid
    (old_background,) = background_pids(master)
    control, askers = "15550310000", [f"15550311{i:03d}" for i in range(WORKERS)]  # a turn in an AI call each
    greeted = [f"15550312{i:03d}" for i in range(3)]  # their welcomes: in a Graph call, or waiting for one
    question = "does {} get a kettle discount?"
    with httpx.Client(timeout=10) as client:
        meta = Meta(client)
        meta.url = server.url
        for u in [control, *askers]:
            meta.deliver(f"wamid.HI-{u}", message("hello", wa_id=u, message_id=f"wamid.HI-{u}"))
        meta.deliver(
            f"wamid.Q-{control}", message(question.format(control), wa_id=control, message_id=f"wamid.Q-{control}")
        )
        wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=30, what="the welcomes", server=server)
        calls_per_turn = model_calls(fakes, question.format(control))

        fakes.graph.hold()
        fakes.openai.hold()
        for u in greeted:
            meta.deliver(f"wamid.HI-{u}", message("hello", wa_id=u, message_id=f"wamid.HI-{u}"))
        wait_for(lambda: sending_rows(db) > 0, timeout=15, what="welcomes in flight", server=server)
        for u in askers:
            meta.deliver(f"wamid.Q-{u}", message(question.format(u), wa_id=u, message_id=f"wamid.Q-{u}"))
        wait_for(lambda: held_leases(db) == WORKERS, timeout=15, what="every worker in an AI call", server=server)
        in_flight = (held_leases(db), sending_rows(db))
        server.process.send_signal(signal.SIGHUP)
        # The calls stay in flight until a process started beside the old one has started up (it would take them
        # over now), or for 3 s when none is started while the old one finishes them.
        if within(3, lambda: len(background_pids(master)) > 1):
            within(30, lambda: "took back" in server.log.read_text())
        fakes.graph.release()
        fakes.openai.release()

        ready: list[httpx.Response] = []  # /readyz throughout the reload
        deadline = time.monotonic() + 40
        while (unanswered(db, meta.acknowledged) or background_pids(master) in ([], [old_background])) and (
            time.monotonic() < deadline
        ):
            ready.append(httpx.get(f"{server.url}/readyz", timeout=20))
            time.sleep(0.2)
    assert not unanswered(db, meta.acknowledged), server.tail(80)
    time.sleep(0.5)  # a second send, if any, would arrive now
    # The old background process finished what it had started; the new one did the rest: a turn worked by both
    # would have reached the model twice, a send taken back from the old one would have reached the user twice.
    assert in_flight[0] == WORKERS
    assert in_flight[1] > 0
    assert {u: model_calls(fakes, question.format(u)) for u in askers} == dict.fromkeys(askers, calls_per_turn)
    counts = reply_counts(db, fakes.graph)
    assert len(counts) == 2 * (1 + len(askers)) + len(greeted)
    assert sorted(set(counts.values())) == [1], counts
    assert "took back" not in server.log.read_text()
    # Ready all along: while the old one finished, /readyz said why nothing new was answered.
    assert {r.status_code for r in ready} == {200}, server.tail(60)
    assert any("reload" in r.text for r in ready), [r.text for r in ready]


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


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_killed_master_takes_its_background_process_along(
    database_url: str, gunicorn: Callable[..., ServeProcess]
) -> None:
    # A master started again would start a background process under the same instance name: the old one must not
    # go on beside it (it stops as Gunicorn's web processes do).
    server = gunicorn(database_url)
    assert server.process is not None
    everyone = list(children(server.process.pid))
    try:
        server.kill()
        wait_for(lambda: all(gone(pid) for pid in everyone), timeout=30, what="every child gone", server=server)
    finally:
        for pid in everyone:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert "the Gunicorn master (pid" in server.log.read_text()


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
