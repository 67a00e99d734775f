"""Group commit (chatops.db.group_commit) on both databases: batches form while a write is in flight, every
request gets its own result only after the commit, a refused delivery fails alone, an unreachable database
fails the whole batch, and a failing write never leaves a request waiting.

The leader is held inside its write by the ``on_batch`` callback (called just before each write), so the
requests that arrive meanwhile queue up deterministically.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from typing import Any, cast

import pytest
import sqlalchemy as sa
from flask import Flask

from chatops.channels.events import InboundMessage
from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.db.group_commit import GroupCommit
from chatops.db.ingest import StoreResult
from chatops.db.tables import inbound_messages
from chatops.errors import StorageError, UnstorableError
from chatops.web.app import create_app
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def message(message_id: str, *, user: str = "15550001111", kind: str = "text") -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        account_id="106540352242922",
        user_id=user,
        provider_message_id=message_id,
        kind=cast(Any, kind),
        timestamp=NOW,
        text=f"text of {message_id}",
    )


def stored_ids(db: sa.Engine) -> list[str]:
    m = inbound_messages.c
    with db.connect() as connection:
        return list(connection.execute(sa.select(m.provider_message_id).order_by(m.id)).scalars())


class Gate:
    """An ``on_batch`` callback that records batch sizes and holds the first write until released."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self.sizes: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_first = fail_first

    def __call__(self, deliveries: int) -> None:
        self.sizes.append(deliveries)
        if len(self.sizes) == 1:
            self.entered.set()
            assert self.release.wait(10), "the test never released the first write"
            if self.fail_first:
                raise RuntimeError("a bug in the first write")


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(16) as executor:
        yield executor


def held_then_queued(
    commit: GroupCommit,
    gate: Gate,
    pool: ThreadPoolExecutor,
    first: list[InboundMessage],
    queued: list[list[InboundMessage]],
) -> tuple[Future[StoreResult], list[Future[StoreResult]]]:
    """Start a write of ``first`` and hold it; queue one request per item of ``queued``; release the write."""

    def store(events: list[InboundMessage]) -> Callable[[], StoreResult]:
        return lambda: commit.store(events, now=NOW)

    leader = pool.submit(store(first))
    assert gate.entered.wait(10)
    followers = queue_in_order(commit, pool, [store(events) for events in queued])
    assert not any(f.done() for f in followers)  # nothing is answered before its commit
    gate.release.set()
    return leader, followers


def queue_in_order(
    commit: GroupCommit, pool: ThreadPoolExecutor, stores: list[Callable[[], StoreResult]]
) -> list[Future[StoreResult]]:
    """Submit each store once the previous one waits behind the held write: the batch keeps this order (threads
    started together reach the queue in any order under load, and the ids and duplicates follow the order)."""
    followers = []
    for store in stores:
        followers.append(pool.submit(store))
        for _ in range(2000):  # bounded wait, no sleep-and-hope
            if commit.waiting == len(followers):
                break
            threading.Event().wait(0.005)
        assert commit.waiting == len(followers)
    return followers


def test_requests_arriving_during_a_write_are_committed_together(db: sa.Engine, pool: ThreadPoolExecutor) -> None:
    gate = Gate()
    commit = GroupCommit(db, on_batch=gate)
    queued = [[message(f"wamid.{i}", user=f"1555000{i % 3}")] for i in range(6)]
    queued.append([message("wamid.2", user="15550002"), message("wamid.LAST", user="15550009")])
    leader, followers = held_then_queued(commit, gate, pool, [message("wamid.FIRST")], queued)

    assert leader.result(10) == StoreResult(inserted=1)
    results = [f.result(10) for f in followers]
    assert results == [StoreResult(inserted=1)] * 6 + [StoreResult(inserted=1, duplicates=1)]
    assert gate.sizes == [1, 7]  # the held write, then everything that queued behind it as ONE write
    assert stored_ids(db) == ["wamid.FIRST", *(f"wamid.{i}" for i in range(6)), "wamid.LAST"]
    assert commit.waiting == 0


def test_a_delivery_the_database_refuses_fails_alone(db: sa.Engine, pool: ThreadPoolExecutor) -> None:
    gate = Gate()
    commit = GroupCommit(db, on_batch=gate)
    refused = [message("wamid.BAD", kind=None)]  # type: ignore[arg-type]  # NOT NULL violation, on both databases
    queued = [[message("wamid.A")], refused, [message("wamid.B")]]
    leader, followers = held_then_queued(commit, gate, pool, [message("wamid.FIRST")], queued)

    assert leader.result(10) == StoreResult(inserted=1)
    assert followers[0].result(10) == StoreResult(inserted=1)
    with pytest.raises(UnstorableError, match="the database refused a value"):
        followers[1].result(10)
    assert followers[2].result(10) == StoreResult(inserted=1)
    assert stored_ids(db) == ["wamid.FIRST", "wamid.A", "wamid.B"]
    # The next write works as usual.
    assert commit.store([message("wamid.AFTER")], now=NOW) == StoreResult(inserted=1)


def test_an_unreachable_database_fails_every_request_of_the_batch(pool: ThreadPoolExecutor) -> None:
    engine = create_db_engine("postgresql://nobody@127.0.0.1:1/none")  # nothing listens on port 1
    try:
        gate = Gate()
        commit = GroupCommit(engine, on_batch=gate)
        queued = [[message(f"wamid.{i}")] for i in range(5)]
        leader, followers = held_then_queued(commit, gate, pool, [message("wamid.FIRST")], queued)
        for future in [leader, *followers]:
            with pytest.raises(StorageError, match="cannot use the database"):
                future.result(10)
        assert gate.sizes == [1, 5]
        assert commit.waiting == 0
    finally:
        engine.dispose()


def test_a_failing_write_wakes_its_requests_and_hands_over(db: sa.Engine, pool: ThreadPoolExecutor) -> None:
    gate = Gate(fail_first=True)
    commit = GroupCommit(db, on_batch=gate)
    queued = [[message("wamid.A")], [message("wamid.B")]]
    leader, followers = held_then_queued(commit, gate, pool, [message("wamid.FIRST")], queued)

    with pytest.raises(RuntimeError, match="a bug in the first write"):
        leader.result(10)
    assert [f.result(10) for f in followers] == [StoreResult(inserted=1)] * 2
    assert stored_ids(db) == ["wamid.A", "wamid.B"]


def test_an_empty_delivery_needs_no_database() -> None:
    engine = create_db_engine("postgresql://nobody@127.0.0.1:1/none")
    try:
        assert GroupCommit(engine).store([], now=NOW) == StoreResult()
    finally:
        engine.dispose()


def test_webhooks_go_through_group_commit(database_url: str, pool: ThreadPoolExecutor) -> None:
    # Both databases: SQLite for its one writer, PostgreSQL for the statement and commit each write costs.
    db = create_db_engine(database_url, pool_size=16)
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
    )
    app: Flask = create_app(settings, None, db=db, clock=lambda: NOW)
    try:
        bodies = [whatsapp_text(f"hello {i}", message_id=f"wamid.WEB{i}", wa_id=f"1555000{i % 4}") for i in range(40)]
        bodies += bodies[:5]  # Meta delivers some twice, possibly while the first copy is being written
        responses = list(pool.map(lambda body: Webhook(app.test_client()).post(body), bodies))
        assert [r.status_code for r in responses] == [200] * 45
        assert sum(r.json["stored"] for r in responses) == 40
        assert sum(r.json["duplicates"] for r in responses) == 5
        assert sorted(stored_ids(db)) == sorted(f"wamid.WEB{i}" for i in range(40))
        exported = app.test_client().get("/metrics").text
        assert "chatops_webhook_batch_deliveries_count" in exported
    finally:
        db.dispose()


def test_a_connection_lost_mid_batch_is_replaced_and_the_batch_written_once(
    database_url: str, backend: str, pool: ThreadPoolExecutor
) -> None:
    # PostgreSQL restarted (or a firewall dropped the socket) while a batch was on its way: the write finds its
    # pooled connection dead, takes a fresh one and writes the whole batch; every request gets its own result.
    if backend != "postgresql":
        pytest.skip("SQLite has no connection to lose")
    db = create_db_engine(database_url)
    try:
        assert GroupCommit(db).store([message("wamid.WARM")], now=NOW) == StoreResult(inserted=1)  # a pooled connection
        gate = Gate()
        commit = GroupCommit(db, on_batch=gate)
        queued = [[message(f"wamid.{i}", user=f"1555000{i % 2}")] for i in range(4)]
        queued.append([message("wamid.2")])  # a duplicate inside the batch

        def kill_pooled_connections() -> None:
            with sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg2://")).connect() as admin:
                killed = admin.exec_driver_sql(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'chatops'"
                ).scalar_one()
            assert killed >= 1

        leader = pool.submit(lambda: commit.store([message("wamid.FIRST")], now=NOW))
        assert gate.entered.wait(10)
        kill_pooled_connections()  # the write has not sent its statement yet
        followers = queue_in_order(commit, pool, [partial(commit.store, events, now=NOW) for events in queued])
        gate.release.set()

        assert leader.result(10) == StoreResult(inserted=1)
        assert [f.result(10) for f in followers] == [StoreResult(inserted=1)] * 4 + [StoreResult(duplicates=1)]
        assert stored_ids(db) == ["wamid.WARM", "wamid.FIRST", *(f"wamid.{i}" for i in range(4))]
    finally:
        db.dispose()


def test_a_delivery_the_driver_cannot_bind_fails_alone(db: sa.Engine, pool: ThreadPoolExecutor) -> None:
    # The parsers clean webhook text; an event built otherwise can still carry a lone surrogate, which the
    # drivers refuse with UnicodeEncodeError before the database sees it. It used to fail the whole batch.
    gate = Gate()
    commit = GroupCommit(db, on_batch=gate)
    unbindable = message("wamid.SURROGATE")
    unbindable = InboundMessage(**{**unbindable.__dict__, "text": "a\ud800b"})
    queued = [[message("wamid.A")], [unbindable], [message("wamid.B")]]
    leader, followers = held_then_queued(commit, gate, pool, [message("wamid.FIRST")], queued)

    assert leader.result(10) == StoreResult(inserted=1)
    assert followers[0].result(10) == StoreResult(inserted=1)
    with pytest.raises(UnstorableError, match="the database refused a value"):
        followers[1].result(10)
    assert followers[2].result(10) == StoreResult(inserted=1)
    assert stored_ids(db) == ["wamid.FIRST", "wamid.A", "wamid.B"]


@pytest.mark.parametrize("text", ["a\ud800b", "a\x00b"], ids=["surrogate", "nul"])
def test_store_events_calls_a_value_the_driver_refuses_unstorable(db: sa.Engine, text: str) -> None:
    from chatops.db.ingest import store_events

    event = InboundMessage(**{**message("wamid.X").__dict__, "text": text})
    if db.dialect.name == "sqlite" and "\x00" in text:
        assert store_events(db, [event], now=NOW) == StoreResult(inserted=1)  # SQLite holds NUL
        return
    with pytest.raises(UnstorableError, match="the database refused a value"):
        store_events(db, [event], now=NOW)
    assert stored_ids(db) == []
