"""One live process per instance name (chatops.engine.instance_lock): real ``chatops worker``/``serve`` processes on
one PostgreSQL database.

A second process under a name in use refuses to start, and the first keeps its work; processes with names of their
own run side by side; a SIGKILLed process restarted under its name starts at once and takes its work back; and a
lock connection the server ends (``pg_terminate_backend``) is taken again without a crash or a reply sent twice,
while a process whose name another one took meanwhile takes no new work and says so on ``/readyz``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg2
import pytest
import sqlalchemy as sa

from chatops.db.instance_lock import instance_key, session_label
from chatops.db.tables import outbound_messages
from tests.processes import (
    Fakes,
    Meta,
    ServeProcess,
    message,
    readyz_answer,
    sending_rows,
    sends,
    serve_env,
    unanswered,
    wait_for,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
POSTGRES_ONLY = pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])

# The lease keeper looks at the lock every 0.5 s; a held Graph request does not time out during a test.
LEASE = {"CHATOPS_LEASE_SECONDS": "2", "CHATOPS_GRAPH_TIMEOUT": "30"}
# A lease far longer than any test: what is sent soon after a restart was taken back by the restart, not by expiry.
LONG_LEASE = {"CHATOPS_LEASE_SECONDS": "60", "CHATOPS_GRAPH_TIMEOUT": "30"}
WORKER_BANNER = "chatops worker: 2 workers on"


class WorkerProcess:
    """``chatops worker --concurrency 2`` as a child process; stdout and stderr go to a log file."""

    def __init__(self, workdir: Path, env: dict[str, str], *, name: str) -> None:
        self.log = workdir / f"{name}.log"
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "chatops", "worker", "--concurrency", "2"],
                cwd=workdir,
                env=env,
                stdout=output,
                stderr=subprocess.STDOUT,
            )

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def started(self) -> WorkerProcess:
        wait_for(lambda: WORKER_BANNER in self.text or self.process.poll() is not None, timeout=60, what="a start")
        assert WORKER_BANNER in self.text, self.text
        return self

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def workers(bot_dir: Path, fakes: Fakes, database_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Starts ``chatops worker`` processes on the test database; every one is killed at the end of the test."""
    started: list[WorkerProcess] = []

    def start(**settings: str) -> WorkerProcess:
        worker = WorkerProcess(bot_dir, serve_env(database_url, fakes, **settings), name=f"worker-{len(started)}")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


@pytest.fixture
def web(bot_dir: Path, fakes: Fakes, database_url: str) -> Iterator[ServeProcess]:
    """``chatops serve --no-workers``: takes the webhooks, answers nothing."""
    server = ServeProcess(bot_dir, serve_env(database_url, fakes), name="web", args=("--no-workers",)).start()
    yield server
    server.kill()


@pytest.fixture
def meta(web: ServeProcess) -> Iterator[Meta]:
    with httpx.Client(timeout=10) as client:
        meta = Meta(client)
        meta.url = web.url
        yield meta


def hello(meta: Meta, user: str, tag: str = "H") -> None:
    meta.deliver(f"wamid.{tag}-{user}", message("hello", wa_id=user, message_id=f"wamid.{tag}-{user}"))


def sending_holders(db: sa.Engine) -> list[str]:
    o = outbound_messages.c
    with db.connect() as connection:
        return list(connection.execute(sa.select(o.locked_by).where(o.status == "sending")).scalars())


def lock_sessions(db: sa.Engine, pid: int) -> list[int]:
    """The PostgreSQL backends where process ``pid`` holds an instance's advisory lock."""
    query = sa.text(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = :label"
    )
    label = f"chatops pid {pid} on {socket.gethostname()}"[:63]
    with db.connect() as connection:
        return list(connection.execute(query, {"label": label}).scalars())


def one_reply_each(fakes: Fakes, users: list[str]) -> dict[str, int]:
    return {user: len(sends(fakes.graph, user)) for user in users}


def test_the_key_of_a_name_never_changes() -> None:
    # Processes of two releases side by side (a rolling upgrade) must lock the same key for the same name.
    assert instance_key("web-1:worker") == -1962594210831663795
    assert instance_key("web-1:worker") != instance_key("web-2:worker")
    assert session_label().startswith("chatops pid ")


@POSTGRES_ONLY
def test_a_second_worker_under_a_name_in_use_refuses_to_start_and_the_first_keeps_its_work(
    db: sa.Engine, fakes: Fakes, meta: Meta, workers: Callable[..., WorkerProcess]
) -> None:
    first = workers(CHATOPS_INSTANCE="worker-a", **LONG_LEASE).started()
    users = ["15550400001", "15550400002"]
    fakes.graph.hold()  # the welcomes stay in flight: sends the first process holds under its name
    for user in users:
        hello(meta, user)
    wait_for(lambda: sending_rows(db), timeout=15, what="a welcome in flight")
    holders = sending_holders(db)
    assert all(holder.startswith("worker-a/") for holder in holders)

    twin = workers(CHATOPS_INSTANCE="worker-a", **LONG_LEASE)
    assert twin.process.wait(timeout=60) == 2  # a setting to fix, as for every ConfigError
    output = twin.text
    assert f"Error: instance 'worker-a' is in use by another running process: chatops pid {first.process.pid} on " in (
        output
    )
    assert "two processes under one name would take back each other's conversations and replies" in output
    assert "Hint: give each process its own CHATOPS_INSTANCE (e.g. worker-1, worker-2)" in output
    assert "docs/operations.md#crash-recovery" in output
    assert "Traceback" not in output
    assert WORKER_BANNER not in output  # refused before any worker started
    assert sending_holders(db) == holders  # nothing of the first process was taken back

    fakes.graph.release()
    wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=20, what="the welcomes sent")
    assert one_reply_each(fakes, users) == {user: 1 for user in users}
    assert first.process.poll() is None
    assert "took back" not in first.text

    # A name of its own: both run, side by side.
    other = workers(CHATOPS_INSTANCE="worker-b", **LONG_LEASE).started()
    assert lock_sessions(db, first.process.pid)
    assert lock_sessions(db, other.process.pid)
    more = [f"155504001{i:02d}" for i in range(8)]
    for user in more:
        hello(meta, user)
    wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=20, what="the next welcomes")
    assert one_reply_each(fakes, more) == {user: 1 for user in more}
    assert first.process.poll() is None
    assert other.process.poll() is None
    assert "took back" not in first.text + other.text


@POSTGRES_ONLY
def test_a_killed_worker_restarted_under_its_name_starts_at_once_and_takes_its_sends_back(
    db: sa.Engine, fakes: Fakes, meta: Meta, workers: Callable[..., WorkerProcess]
) -> None:
    killed = workers(CHATOPS_INSTANCE="worker-a", **LONG_LEASE).started()
    user = "15550400201"
    fakes.graph.hold()
    hello(meta, user)
    wait_for(lambda: sending_rows(db) == 1, timeout=15, what="the welcome in flight")
    killed.kill()  # SIGKILL: its session ends with it, and the lock with the session
    fakes.graph.release()

    restarted_at = time.monotonic()
    restarted = workers(CHATOPS_INSTANCE="worker-a", **LONG_LEASE).started()
    wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=20, what="the welcome sent again")
    elapsed = time.monotonic() - restarted_at
    print(f"\nrestart under the name of a SIGKILLed worker: its send taken back and sent {elapsed:.1f}s later")
    assert elapsed < 20  # far below the 60 s lease: taken back by the restart, not by expiry
    assert "took back 0 conversation(s) and 1 reply(ies) its previous process left" in restarted.text
    assert "in use by another running process" not in restarted.text


@POSTGRES_ONLY
def test_a_lock_connection_ended_by_the_server_is_taken_again_without_a_crash_or_a_reply_twice(
    db: sa.Engine, fakes: Fakes, meta: Meta, workers: Callable[..., WorkerProcess]
) -> None:
    worker = workers(CHATOPS_INSTANCE="worker-a", **LEASE).started()
    pid = worker.process.pid
    [session] = wait_for(lambda: lock_sessions(db, pid), timeout=10, what="the lock held")
    users = [f"155504003{i:02d}" for i in range(3)]
    fakes.graph.hold()
    for user in users:
        hello(meta, user)
    wait_for(lambda: sending_rows(db), timeout=15, what="a welcome in flight")

    with db.connect() as connection:
        assert connection.execute(sa.select(sa.func.pg_terminate_backend(session, 5000))).scalar_one()
    [again] = wait_for(lambda: lock_sessions(db, pid), timeout=10, what="the lock taken again")
    assert again != session
    fakes.graph.release()
    later = [f"155504004{i:02d}" for i in range(3)]
    for user in later:
        hello(meta, user)
    wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=20, what="every welcome")

    assert one_reply_each(fakes, users + later) == {user: 1 for user in users + later}
    assert worker.process.poll() is None
    output = worker.text
    assert "instance worker-a: the connection holding its name was lost; taking it again" in output
    assert "took back" not in output  # no other incarnation ran meanwhile: nothing to take back
    assert "Traceback" not in output
    assert "thread died" not in output


@POSTGRES_ONLY
def test_a_process_whose_name_was_taken_while_its_lock_was_lost_stops_taking_work_and_says_so(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    server = serve(database_url, CHATOPS_INSTANCE="web-1", **LEASE)
    assert server.process is not None
    [session] = wait_for(lambda: lock_sessions(db, server.process.pid), timeout=10, what="the lock held")
    twin: Any = psycopg2.connect(db.url.set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        twin.autocommit = True
        with twin.cursor() as cursor:
            cursor.execute("SET application_name = 'the twin'")
            # The server's session ends, and the name is taken before the lease keeper's next look (0.5 s).
            cursor.execute(
                "SELECT pg_terminate_backend(%s, 5000), pg_try_advisory_lock(%s)", (session, instance_key("web-1"))
            )
            assert cursor.fetchone() == (True, True)
        not_ready = wait_for(lambda: readyz_answer(server, 503), timeout=10, what="/readyz 503", server=server)
        assert "instance web-1: another running process holds this name (the twin " in not_ready.text
        assert "this process takes no new work until the name is free" in not_ready.text

        with httpx.Client(timeout=10) as client:
            meta = Meta(client)
            meta.url = server.url
            hello(meta, "15550400501")
            time.sleep(1.5)  # three looks of the lease keeper, and as many chances to claim
            assert unanswered(db, meta.acknowledged) == ["wamid.H-15550400501"]  # stored, not answered
    finally:
        twin.close()  # the twin exits
    wait_for(lambda: readyz_answer(server, 200), timeout=10, what="/readyz 200", server=server)
    wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=15, what="the answer", server=server)
    assert len(sends(fakes.graph, "15550400501")) == 1
    assert "instance web-1: the name is free again; this process takes new work" in server.log.read_text()


@POSTGRES_ONLY
def test_under_gunicorn_readyz_says_why_the_background_process_refused_to_start(
    database_url: str, db: sa.Engine, bot_dir: Path, fakes: Fakes
) -> None:
    holder: Any = psycopg2.connect(db.url.set(drivername="postgresql").render_as_string(hide_password=False))
    holder.autocommit = True
    env = serve_env(database_url, fakes, CHATOPS_INSTANCE="web-1")
    server = ServeProcess(bot_dir, env, name="gunicorn", args=("--server", "gunicorn", "--processes", "1"))
    try:
        with holder.cursor() as cursor:  # another live process holds the name
            cursor.execute("SET application_name = 'the twin'")
            cursor.execute("SELECT pg_advisory_lock(%s)", (instance_key("web-1"),))
        server.start()

        def refused() -> httpx.Response | None:
            answer = readyz_answer(server, 503)
            return answer if answer is not None and "exited with code 1 (" in answer.text else None

        not_ready = wait_for(
            refused,
            timeout=30,
            what="/readyz 503 with the reason",
            server=server,
        )
        assert "the background process (workers and sender) exited with code 1 (it could not start: " in (
            not_ready.text
        )
        assert "instance 'web-1' is in use by another running process: the twin" in not_ready.text
    finally:
        holder.close()
        server.stop()
