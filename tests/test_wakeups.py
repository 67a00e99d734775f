"""Wake-ups instead of polling (issue 17): a write that creates work wakes the loops waiting for it.

In-process: a worker whose poll is far longer than the test answers a webhook at once, because the webhook's commit
wakes it (the webhook and the worker share a process, as in ``serve``; on PostgreSQL with its LISTEN connection up,
as ``Background`` runs it). On PostgreSQL the webhook's write also notifies the other processes (after its commit,
from the notifier thread) only when it inserted something, with the debounce as payload, and a turn's commit
notifies the senders. The process tests (latency across processes, idle cost, a database cut) are in
tests/test_wakeups_process.py.
"""

from __future__ import annotations

import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa

from chatops.channels.events import InboundMessage, OutboundMessage
from chatops.db.inbox import Conversation, claim_conversation, complete_turn, store_events
from chatops.db.tables import inbound_messages, outbound_messages
from chatops.db.wakeups import Wakeups, wakeups_for
from chatops.engine.wakeups import Listener
from chatops.engine.worker import Worker
from tests.harness import START, Harness

FAR = 30.0  # a poll interval longer than any wait here: only a wake-up can explain a prompt answer


def test_a_wake_up_before_the_wait_is_not_missed_and_a_timed_one_falls_due() -> None:
    wakeups, stop = Wakeups(), threading.Event()
    since = wakeups.generation("inbox")
    wakeups.wake("inbox")  # announced between the look for work and the wait
    assert wakeups.wait("inbox", since=since, timeout=FAR, stop=stop)
    assert not wakeups.wait("outbox", since=wakeups.generation("outbox"), timeout=0.05, stop=stop)

    since = wakeups.generation("inbox")
    wakeups.wake("inbox", after=0.3)
    started = time.monotonic()
    assert wakeups.wait("inbox", since=since, timeout=FAR, stop=stop)
    assert 0.25 <= time.monotonic() - started < 2.0


@pytest.fixture
def harness(tmp_path: Path, database_url: str, db: sa.Engine) -> Iterator[Harness]:
    harness = Harness(tmp_path, database_url, db)
    yield harness
    harness.runtime.variables.runner.close()


def test_a_webhook_wakes_the_idle_worker_of_its_process(harness: Harness, db: sa.Engine) -> None:
    wakeups, stop = wakeups_for(db), threading.Event()
    threads = []
    if db.dialect.name == "postgresql":  # what Background runs there: NOTIFY reaches the loops through LISTEN
        listener = Listener(db, wakeups)
        threads.append(threading.Thread(target=listener.run, args=(stop,), daemon=True))
    worker = Worker(harness.runtime, db, harness.settings, clock=harness.clock, name="w0", wakeups=wakeups)
    threads.append(threading.Thread(target=worker.run, args=(stop,), kwargs={"idle_wait": FAR}, daemon=True))
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 10
        while db.dialect.name == "postgresql" and not wakeups.listening and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)  # the worker has looked once and found nothing: it is waiting now
        sent = time.monotonic()
        harness.send("hello")
        while time.monotonic() - sent < 5 and not harness.rows(outbound_messages, "id"):
            time.sleep(0.01)
        latency = time.monotonic() - sent
    finally:
        stop.set()
        wakeups.wake_all()
        for thread in threads:
            thread.join(5)
    print(f"\n{db.dialect.name}: reply committed {latency * 1000:.0f} ms after the webhook (poll {FAR:g}s)")
    assert harness.rows(inbound_messages, "status") == [("done",)]
    assert latency < 2.0


# PostgreSQL: what the writes notify --------------------------------------------------------------------------


@pytest.fixture
def listening(database_url: str) -> Iterator[Any]:
    if not database_url.startswith("postgresql"):
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's")
    url = sa.make_url(database_url).set(drivername="postgresql")
    connection = psycopg2.connect(url.render_as_string(hide_password=False))
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("LISTEN chatops_inbox; LISTEN chatops_outbox")
    yield connection
    connection.close()


def notifications(connection: Any, *, wait: float = 0.5) -> list[tuple[str, str]]:
    select.select([connection], [], [], wait)
    connection.poll()
    received = [(n.channel, n.payload) for n in connection.notifies]
    connection.notifies.clear()
    return received


def text(message_id: str) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        account_id="PHONE",
        user_id="15550001111",
        provider_message_id=message_id,
        kind="text",
        timestamp=START,
        text="hi",
    )


def test_a_write_that_stored_messages_notifies_the_workers_and_a_turn_the_senders(
    listening: Any, db: sa.Engine
) -> None:
    assert store_events(db, [text("wamid.N1")], now=START, debounce=1.5).inserted == 1
    token = wakeups_for(db).token  # names the process (its own listener leaves them out)
    assert notifications(listening) == [("chatops_inbox", f"1.5:{token}")]  # the payload: seconds until due
    assert store_events(db, [text("wamid.N1")], now=START).duplicates == 1
    assert notifications(listening, wait=0.2) == []  # a redelivery creates no work

    with db.connect() as connection:
        pending = connection.execute(sa.select(inbound_messages.c.id)).all()
    conversation = claim_conversation(db, worker_id="w0", now=START + timedelta(seconds=2), lease=timedelta(seconds=60))
    assert isinstance(conversation, Conversation)
    complete_turn(
        db,
        conversation,
        worker_id="w0",
        now=START,
        lease=timedelta(seconds=60),
        answered=[row_id for (row_id,) in pending],
        turn=None,
        replies=(OutboundMessage(text="hello"),),
    )
    assert notifications(listening) == [("chatops_outbox", f"0.0:{token}")]


def test_a_process_that_exits_right_after_its_commit_still_notifies(listening: Any, database_url: str) -> None:
    """A one-shot command (``chatops conversations reply``) announces and ends at once: the NOTIFY still leaves,
    so the sender of a running server takes the operator's message now, not at its fallback poll."""
    script = (
        "import sys\n"
        "from chatops.db.connect import create_db_engine\n"
        "from chatops.db.wakeups import announce\n"
        "announce(create_db_engine(sys.argv[1], pool_size=1), 'outbox')\n"  # the engine is dropped at once
    )
    finished = subprocess.run([sys.executable, "-c", script, database_url], capture_output=True, text=True, timeout=60)

    assert finished.returncode == 0, finished.stderr
    assert [channel for channel, _ in notifications(listening, wait=2.0)] == ["chatops_outbox"]
