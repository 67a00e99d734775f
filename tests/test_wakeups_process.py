"""Wake-ups on PostgreSQL, process level (issue 17): a reply starts within milliseconds of the acknowledgement, an
idle server sends the database nothing, and the LISTEN connection comes back after a database cut.

Real ``chatops serve`` processes (waitress with in-process workers, and Gunicorn with its background process) with
``CHATOPS_POLL_SECONDS=30``: a reply that comes sooner than that was woken, not polled for. Idle cost is read from
``pg_stat_activity``: a backend of the test's database that ran a statement has a new ``query_start``.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.processes import Fakes, ServeProcess, children, message, post, reads, readyz_answer, serve_env, wait_for
from tests.tcp_proxy import TCPProxy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

POLL = 30.0  # CHATOPS_POLL_SECONDS here: longer than any wait of these tests
SETTINGS = {"CHATOPS_POLL_SECONDS": str(POLL), "CHATOPS_LEASE_SECONDS": "120"}  # the sender's sweep: every 30 s
REPLY_TARGET = 1.0  # seconds from the acknowledgement to the reply at the Graph API (fake AI: no model latency)
IDLE_WINDOW = 3.0
SERVERS = {"waitress": (), "gunicorn": ("--server", "gunicorn", "--processes", "2")}


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("wake-ups between processes are PostgreSQL's (LISTEN/NOTIFY); SQLite polls")
    return database_url


@pytest.fixture
def start_server(bot_dir: Path, fakes: Fakes) -> Iterator[Callable[..., ServeProcess]]:
    """Starts ``chatops serve`` (``args`` pick the server) with :data:`SETTINGS`; /readyz 200; killed at the end."""
    started: list[ServeProcess] = []

    def start(database_url: str, args: tuple[str, ...] = ()) -> ServeProcess:
        env = serve_env(database_url, fakes, **SETTINGS)
        server = ServeProcess(bot_dir, env, name=f"serve-{len(started)}", args=args)
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


def listeners(db: sa.Engine) -> list[Any]:
    """The backends of the test's database in LISTEN (the servers' wake-up connections)."""
    with db.connect() as connection:
        return connection.execute(
            sa.text(
                "SELECT pid, backend_start FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN chatops_%'"
            )
        ).all()


def statements_since(db: sa.Engine, before: dict[int, Any]) -> list[int]:
    """The other backends of the test's database that started a statement since ``before`` was taken."""
    now = activity(db)
    return [pid for pid, started in now.items() if before.get(pid) != started]


def activity(db: sa.Engine) -> dict[int, Any]:
    with db.connect() as connection:
        rows = connection.execute(
            sa.text(
                "SELECT pid, query_start FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).all()
    return {pid: started for pid, started in rows}


def reply_latency(client: httpx.Client, server: ServeProcess, fakes: Fakes, *, wa_id: str, message_id: str) -> float:
    """Seconds from the webhook's acknowledgement to the reply reaching the (fake) Graph API."""
    response = post(client, server.url, message("hello", wa_id=wa_id, message_id=message_id))
    acknowledged = time.monotonic()
    assert response.status_code == 200, response.text
    deadline = acknowledged + POLL / 2
    while message_id not in reads(fakes.graph) and time.monotonic() < deadline:
        time.sleep(0.002)
    return time.monotonic() - acknowledged


@pytest.mark.parametrize("server_kind", list(SERVERS))
def test_a_reply_starts_at_once_and_an_idle_server_asks_the_database_nothing(
    server_kind: str, postgres_url: str, db: sa.Engine, fakes: Fakes, start_server: Callable[..., ServeProcess]
) -> None:
    server = start_server(postgres_url, SERVERS[server_kind])
    wait_for(lambda: listeners(db), timeout=10, what="the LISTEN connection", server=server)
    time.sleep(0.5)  # every loop has looked once and waits now
    latencies = []
    with httpx.Client(timeout=10) as client:
        for index in range(3):
            latency = reply_latency(
                client, server, fakes, wa_id=f"1555020{index:04d}", message_id=f"wamid.WAKE-{index}"
            )
            latencies.append(latency)
            time.sleep(0.3)  # idle again between messages
    time.sleep(1.0)  # the last reply's status writes are done
    before = activity(db)
    time.sleep(IDLE_WINDOW)
    busy = statements_since(db, before)
    print(
        f"\n{server_kind}: reply after the ack {', '.join(f'{s * 1000:.0f}' for s in latencies)} ms "
        f"(poll {POLL:g}s); backends that ran a statement in {IDLE_WINDOW:g}s idle: {len(busy)} of {len(before)}"
    )
    assert max(latencies) < REPLY_TARGET, server.tail()
    assert busy == [], "an idle server kept asking the database"


def test_the_listen_connection_comes_back_after_a_database_cut(
    postgres_url: str, db: sa.Engine, fakes: Fakes, start_server: Callable[..., ServeProcess]
) -> None:
    direct = make_url(postgres_url)
    with TCPProxy(direct.host or "127.0.0.1", direct.port or 5432) as proxy:
        proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = start_server(proxied)
        (first,) = wait_for(lambda: listeners(db), timeout=10, what="the LISTEN connection", server=server)
        proxy.stop()
        time.sleep(1.5)
        proxy.start()
        again = wait_for(
            lambda: [row for row in listeners(db) if row.pid != first.pid],
            timeout=20,
            what="a new LISTEN connection",
            server=server,
        )
        time.sleep(3.0)  # the workers' and the sender's outage backoff is over: they wait for notifications again
        with httpx.Client(timeout=10) as client:
            latency = reply_latency(client, server, fakes, wa_id="15550300001", message_id="wamid.AFTER-CUT")
        readiness = httpx.get(f"{server.url}/readyz", timeout=5)
    print(f"\nafter a database cut: listening again, reply {latency * 1000:.0f} ms after the ack (poll {POLL:g}s)")
    assert len(again) == 1
    assert latency < REPLY_TARGET, server.tail()
    assert "database available again" in server.log.read_text()  # the cut was reported, and its end
    assert readiness.status_code == 200, readiness.text  # the listener's heartbeat kept /readyz happy
