"""``chatops serve --server granian``: web processes spawned by Granian, the workers in the master.

A real server is spawned (``python -m chatops serve --server granian --processes 2``) in front of the loopback
fakes; the tests look at HTTP answers, the fake Graph API, the database, ``/metrics`` and the process tree
(``/proc``). One SQLite server is shared by the module's tests that leave it as they found it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from tests.conftest import ROOT
from tests.databases import MigratedTemplates
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI
from tests.metrics import sample
from tests.processes import (
    Fakes,
    ServeProcess,
    children,
    held_leases,
    inbound,
    message,
    post,
    reads,
    readyz_answer,
    sends,
    sent_text,
    serve_env,
    wait_for,
)
from tests.test_body_limit import stream_until_answered

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

GRANIAN = ("--server", "granian", "--processes", "2")
LIMIT = 100_000  # CHATOPS_MAX_BODY_BYTES of these servers
# Pool sizes: each web process keeps min(--threads, 8) + 4 connections (32 threads by default: the cap holds), the
# master --workers (4) + 4.
SERVER_POOL = 2 * (8 + 4) + (4 + 4)


def web_pids(master: int) -> list[int]:
    return [pid for pid, command in children(master).items() if "multiprocessing.spawn" in command]


def gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie nobody reaped yet counts as gone)."""
    try:
        return "zombie" in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True


def start_granian(folder: Path, database_url: str, fakes: Fakes, *args: str, **settings: str) -> ServeProcess:
    """``chatops serve --server granian --processes 2`` on ``database_url``, once both web processes serve (the
    banner comes when the first one does)."""
    # serve's private directory (status file, metrics) goes in the test's own: a killed master leaves it
    env = serve_env(database_url, fakes, TMPDIR=str(folder), CHATOPS_MAX_BODY_BYTES=str(LIMIT), **settings)
    server = ServeProcess(folder, env, name=f"granian-{time.monotonic_ns()}", args=(*GRANIAN, *args))
    server.start()
    wait_for(lambda: readyz_answer(server, 200), timeout=20, what="/readyz 200", server=server)
    wait_for(lambda: both_started(server), timeout=30, what="both web processes", server=server)
    return server


def both_started(server: ServeProcess) -> bool:
    return server.log.read_text().count("Started worker-") == 2  # Granian's line, once a web process listens


def stop_everything(server: ServeProcess) -> None:
    """SIGKILL the master and every child left (a failed test must not leave web processes serving)."""
    if server.process is not None and server.process.poll() is None:
        for child in children(server.process.pid):
            os.kill(child, signal.SIGKILL)
    server.kill()


def copy_bot(folder: Path) -> Path:
    shutil.copy(ROOT / "stages.yaml", folder / "stages.yaml")
    shutil.copytree(ROOT / "templates", folder / "templates")
    shutil.copytree(ROOT / "data", folder / "data")
    return folder


@pytest.fixture(scope="module")
def module_fakes() -> Iterator[Fakes]:
    graph, openai = FakeGraphAPI().start(), FakeOpenAI().start()
    try:
        yield Fakes(graph, openai)
    finally:
        graph.stop()
        openai.stop()


@pytest.fixture(scope="module")
def shared(
    tmp_path_factory: pytest.TempPathFactory, _migrated_templates: MigratedTemplates, module_fakes: Fakes
) -> Iterator[ServeProcess]:
    """One granian server on SQLite for the tests that leave it as they found it."""
    folder = copy_bot(tmp_path_factory.mktemp("granian"))
    server = start_granian(folder, _migrated_templates.sqlite_url(), module_fakes)
    try:
        yield server
    finally:
        stop_everything(server)


def test_a_webhook_is_acknowledged_stored_and_answered_by_the_masters_workers(
    backend: str, database_url: str, db: sa.Engine, bot_dir: Path, fakes: Fakes
) -> None:
    server = start_granian(bot_dir, database_url, fakes)
    try:
        assert server.process is not None
        assert len(web_pids(server.process.pid)) == 2, children(server.process.pid)
        with httpx.Client(timeout=10) as client:
            hello = message("hello", wa_id="15550700001", message_id="wamid.GRANIAN-1")
            assert post(client, server.url, hello, signed=False).status_code == 401
            assert post(client, server.url, hello).status_code == 200
            assert [row.provider_message_id for row in inbound(db, wa_id="15550700001")] == ["wamid.GRANIAN-1"]
            wait_for(lambda: "wamid.GRANIAN-1" in reads(fakes.graph), timeout=15, what="the welcome", server=server)
        wait_for(lambda: sends(fakes.graph, "15550700001"), timeout=15, what="the welcome sent", server=server)
        assert "Welcome to Northwind support." in sent_text(sends(fakes.graph, "15550700001")[0])
        assert f"chatops serving 'Northwind Support' on {server.url}" in server.tail(80)
        assert "server:    granian, 2 processes × 32 threads" in server.tail(80)
    finally:
        stop_everything(server)


def scrape(server: ServeProcess) -> str:
    """/metrics on a new connection: whichever web process accepts it answers."""
    response = httpx.get(f"{server.url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    return response.text


def test_any_web_process_shows_the_turns_of_the_master(shared: ServeProcess, module_fakes: Fakes) -> None:
    def sent(text: str) -> float:
        return sample(text, "chatops_outbound_messages_total", channel="whatsapp", outcome="sent", error_code="")

    before = scrape(shared)
    turns, sends_before = sample(before, "chatops_turns_total", outcome="ok"), sent(before)
    with httpx.Client(timeout=10) as client:
        body = message("hello", wa_id="15550700002", message_id="wamid.GRANIAN-M")
        assert post(client, shared.url, body).status_code == 200
    wait_for(lambda: sent(scrape(shared)) == sends_before + 1, timeout=15, what="the send counted", server=shared)
    # The turn and the send ran in the master, which serves no HTTP; the webhook in one web process. Every scrape,
    # whichever web process answers it (new connections spread over both), shows all of them, each counted once.
    for _ in range(6):
        text = scrape(shared)
        assert sample(text, "chatops_turns_total", outcome="ok") == turns + 1
        assert sent(text) == sends_before + 1
        assert sample(text, "chatops_db_pool_size") == SERVER_POOL  # the live processes' pools, summed


def test_readyz_is_a_503_when_the_master_stops_reporting(shared: ServeProcess) -> None:
    assert shared.process is not None
    shared.process.send_signal(signal.SIGSTOP)  # workers, sender and their status file: frozen
    try:
        # Frozen, the master may hold SQLite's write lock (a worker's claim): /readyz's schema check then waits for
        # it up to the busy timeout (30 s) before it answers, with the database among the reasons.
        not_ready = wait_for(lambda: _readyz(shared, 503), timeout=45, what="/readyz 503", server=shared)
        assert "the workers and sender (in the chatops serve main process) has not reported" in not_ready.text
    finally:
        shared.process.send_signal(signal.SIGCONT)
    wait_for(lambda: readyz_answer(shared, 200), timeout=10, what="/readyz 200 again", server=shared)


def _readyz(server: ServeProcess, status: int) -> httpx.Response | None:
    response = httpx.get(f"{server.url}/readyz", timeout=40)
    return response if response.status_code == status else None


def test_a_body_declared_too_large_gets_the_apps_413_without_being_read(shared: ServeProcess) -> None:
    answer, sent, seconds = stream_until_answered(shared.url, declared=900_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), f"no 413 after {sent} bytes: {answer[:200]!r}\n{shared.tail()}"
    assert b"content-type: application/json" in answer.lower()  # the app's answer: Granian has no limit of its own
    assert sent < 16 * 1024 * 1024, sent
    assert seconds < 5, seconds
    # Just over the limit: the same answer. Sent the same way, reading while sending: the server answers before it
    # has read the body, and a client that only reads once it has sent everything may meet a closed connection.
    answer, _, _ = stream_until_answered(shared.url, declared=LIMIT + 1)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{shared.url}/healthz").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sigterm_stops_every_process_and_releases_the_leases(
    database_url: str, db: sa.Engine, bot_dir: Path, fakes: Fakes
) -> None:
    server = start_granian(bot_dir, database_url, fakes, CHATOPS_LEASE_SECONDS="60")
    assert server.process is not None
    try:
        everyone = list(children(server.process.pid))
        fakes.openai.hold()  # a turn in an AI call when the signal comes: it finishes, then its lease is released
        with httpx.Client(timeout=10) as client:
            welcome = message("hello", wa_id="15550700003", message_id="wamid.GRANIAN-T1")
            assert post(client, server.url, welcome).status_code == 200
            wait_for(lambda: sends(fakes.graph, "15550700003"), timeout=15, what="the welcome", server=server)
            question = message("where is my parcel?", wa_id="15550700003", message_id="wamid.GRANIAN-T2")
            assert post(client, server.url, question).status_code == 200
        wait_for(lambda: held_leases(db) == 1, timeout=15, what="a turn in its AI call", server=server)
        server.process.terminate()
        time.sleep(0.5)
        fakes.openai.release()
        started = time.monotonic()
        assert server.process.wait(timeout=40) == 0, server.tail(40)
        print(f"\nSIGTERM with a turn in flight: exited after {time.monotonic() - started:.1f}s")
        # multiprocessing's resource tracker leaves once it sees the master gone: a moment later
        wait_for(lambda: all(gone(pid) for pid in everyone), timeout=5, what="every child gone", server=server)
        assert held_leases(db) == 0
        assert [row.status for row in inbound(db, wa_id="15550700003")] == ["done", "done"]
        assert not list(bot_dir.glob("chatops-serve-*")), "the private directory is left"
    finally:
        stop_everything(server)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_web_processes_stop_when_the_master_is_killed(database_url: str, bot_dir: Path, fakes: Fakes) -> None:
    server = start_granian(bot_dir, database_url, fakes)
    assert server.process is not None
    everyone = web_pids(server.process.pid)
    try:
        server.kill()
        wait_for(lambda: all(gone(pid) for pid in everyone), timeout=15, what="the web processes gone", server=server)
    finally:
        for pid in everyone:
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_ctrl_c_stops_gracefully(database_url: str, bot_dir: Path, fakes: Fakes) -> None:
    # Ctrl-C in a terminal is a SIGINT to every process of the foreground group. A Granian 2.8 web process that
    # gets it and then the master's SIGTERM never exits: the web processes are in groups of their own.
    env = serve_env(database_url, fakes, TMPDIR=str(bot_dir))
    server = ServeProcess(bot_dir, env, name="granian-ctrl-c", args=GRANIAN, session=True)
    server.start()
    assert server.process is not None
    try:
        wait_for(lambda: readyz_answer(server, 200), timeout=20, what="/readyz 200", server=server)
        everyone = list(children(server.process.pid))
        os.killpg(server.process.pid, signal.SIGINT)
        # Within the time a request in flight may take, not after the SIGKILL of a hung web process (KILL_SECONDS).
        assert server.process.wait(timeout=20) == 0, server.tail(40)
        wait_for(lambda: all(gone(pid) for pid in everyone), timeout=5, what="every child gone", server=server)
    finally:
        stop_everything(server)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_sighup_replaces_the_web_processes_and_refuses_a_broken_bot(
    database_url: str, bot_dir: Path, fakes: Fakes
) -> None:
    server = start_granian(bot_dir, database_url, fakes)
    assert server.process is not None
    master = server.process.pid
    old = set(web_pids(master))
    stages = bot_dir / "stages.yaml"
    original = stages.read_text()
    try:
        stages.write_text(original.replace("start: welcome", "start: welcom"))
        server.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in server.tail(80), timeout=10, what="the refusal", server=server)
        assert set(web_pids(master)) == old
        stages.write_text(original)
        statuses: list[int] = []
        server.process.send_signal(signal.SIGHUP)
        with httpx.Client(timeout=10) as client:
            n = 0
            deadline = time.monotonic() + 30
            while set(web_pids(master)) & old and time.monotonic() < deadline:  # requests all along: none fails
                n += 1
                body = message("hi", wa_id=f"1555071{n:04d}", message_id=f"wamid.GRANIAN-HUP-{n}")
                statuses.append(post(client, server.url, body).status_code)
        assert not set(web_pids(master)) & old, server.tail(40)
        assert len(web_pids(master)) == 2
        log = server.log.read_text()
        for n in (1, 2):  # each old process stopped once its successor served, not after a fixed delay
            replaced = log[log.index(f"Respawning worker-{n}") :]
            assert replaced.index(f"Started worker-{n}") < replaced.index(f"Stopping old worker-{n}"), replaced
        assert set(statuses) == {200}, statuses
        assert readyz_answer(server, 200) is not None
        # The replaced processes' pools leave the pool gauges; their counts stay.
        wait_for(
            lambda: sample(scrape(server), "chatops_db_pool_size") == SERVER_POOL, timeout=10, what="old pools gone"
        )
        text = scrape(server)
        assert sample(text, "chatops_webhook_requests_total", channel="whatsapp", status="200") == len(statuses)
    finally:
        stop_everything(server)


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_port_in_use_says_so_like_the_other_servers(
    database_url: str, bot_dir: Path, fakes: Fakes, busy_port: int
) -> None:
    env = serve_env(database_url, fakes, TMPDIR=str(bot_dir))
    command = [sys.executable, "-m", "chatops", "serve", *GRANIAN, "--port", str(busy_port)]
    result = subprocess.run(command, cwd=bot_dir, env=env, capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-2:] == [
        f"Error: cannot listen on 127.0.0.1:{busy_port}: the port is already in use",
        "Hint: stop the other server, or choose another port with --port (0 picks a free one)",
    ]
    assert not list(bot_dir.glob("chatops-serve-*"))
