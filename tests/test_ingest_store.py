"""The webhook's durable write (chatops.db.ingest) on both databases: dedup, per-delivery counts, order, atomicity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from chatops.channels.events import InboundMessage, StatusUpdate
from chatops.db.ingest import StoreResult, delivery, store_events, write_deliveries
from chatops.db.tables import conversations, inbound_messages, outbound_messages
from chatops.errors import UnstorableError
from tests.outbox import add_conversation, add_outbound, outbound, status_update

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def text(message_id: str, *, user: str = "15550001111", name: str | None = "Ada", at: int = 0) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        account_id="106540352242922",
        user_id=user,
        provider_message_id=message_id,
        kind="text",
        timestamp=NOW - timedelta(minutes=10) + timedelta(seconds=at),
        text=f"text of {message_id}",
        user_name=name,
        payload={"reply_to": None, "forwarded": False},
        raw={"id": message_id, "type": "text"},
    )


def stored(db: sa.Engine) -> list[sa.Row[Any]]:
    m = inbound_messages.c
    with db.connect() as connection:
        return list(connection.execute(sa.select(m.provider_message_id, m.text, m.conversation_id).order_by(m.id)))


def conversation(db: sa.Engine, user: str) -> Any:
    c = conversations.c
    with db.connect() as connection:
        return connection.execute(sa.select(c.id, c.user_name, c.last_inbound_at).where(c.user_id == user)).one()


def test_one_webhook_is_stored_with_everything_a_worker_needs(db: sa.Engine) -> None:
    result = store_events(db, [text("wamid.A"), text("wamid.B", at=5)], now=NOW, debounce=2.5)
    assert result == StoreResult(inserted=2, duplicates=0, statuses=0)
    with db.connect() as connection:
        rows = connection.execute(sa.select(inbound_messages).order_by(inbound_messages.c.id)).all()
    assert [r.provider_message_id for r in rows] == ["wamid.A", "wamid.B"]
    first = rows[0]
    assert (first.channel, first.kind, first.text, first.status, first.attempts) == (
        "whatsapp",
        "text",
        "text of wamid.A",
        "pending",
        0,
    )
    assert first.payload == {"reply_to": None, "forwarded": False}
    assert first.raw == {"id": "wamid.A", "type": "text"}
    assert first.provider_timestamp == NOW - timedelta(minutes=10)
    assert (first.received_at, first.available_at) == (NOW, NOW + timedelta(seconds=2.5))
    row = conversation(db, "15550001111")
    assert (row.user_name, row.last_inbound_at) == ("Ada", NOW - timedelta(minutes=10) + timedelta(seconds=5))
    assert rows[0].conversation_id == rows[1].conversation_id == row.id
    with db.connect() as connection:
        c = connection.execute(sa.select(conversations)).one()
    assert (c.state, c.mode, c.turn_count, c.created_at, c.updated_at) == ({}, "bot", 0, NOW, NOW)


def test_redelivery_is_a_duplicate_and_changes_nothing(db: sa.Engine) -> None:
    assert store_events(db, [text("wamid.A")], now=NOW) == StoreResult(inserted=1)
    again = store_events(db, [text("wamid.A"), text("wamid.A")], now=NOW + timedelta(seconds=1))
    assert again == StoreResult(inserted=0, duplicates=2)
    assert [r.provider_message_id for r in stored(db)] == ["wamid.A"]


def test_several_deliveries_in_one_write_get_their_own_counts(db: sa.Engine) -> None:
    store_events(db, [text("wamid.OLD", user="1")], now=NOW)
    deliveries = [
        delivery([text("wamid.1", user="1"), text("wamid.OLD", user="1")], now=NOW),
        delivery([text("wamid.2", user="2"), text("wamid.1", user="1")], now=NOW + timedelta(seconds=1)),
        delivery([text("wamid.3", user="1", at=9), text("wamid.3", user="1", at=9)], now=NOW + timedelta(seconds=2)),
        delivery([], now=NOW),
    ]
    results = write_deliveries(db, deliveries)
    assert results == [
        StoreResult(inserted=1, duplicates=1),
        StoreResult(inserted=1, duplicates=1),  # wamid.1 came first in the delivery before
        StoreResult(inserted=1, duplicates=1),
        StoreResult(),
    ]
    # Arrival order is id order (the workers answer in id order), across conversations too.
    assert [r.provider_message_id for r in stored(db)] == ["wamid.OLD", "wamid.1", "wamid.2", "wamid.3"]
    with db.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one() == 2


def test_conversation_keeps_the_newest_timestamp_and_the_last_known_name(db: sa.Engine) -> None:
    store_events(db, [text("wamid.NEW", at=60, name="Ada")], now=NOW)
    # An older message delivered late, in a batch whose last message carries no name.
    write_deliveries(
        db,
        [
            delivery([text("wamid.LATE", at=0, name="Ada Lovelace")], now=NOW),
            delivery([text("wamid.NONAME", at=30, name=None)], now=NOW),
        ],
    )
    row = conversation(db, "15550001111")
    assert row.user_name == "Ada Lovelace"
    assert row.last_inbound_at == NOW - timedelta(minutes=10) + timedelta(seconds=60)


def test_status_updates_are_applied_in_the_same_write(db: sa.Engine) -> None:
    store_events(db, [text("wamid.IN")], now=NOW)
    conversation_id = conversation(db, "15550001111").id
    with db.begin() as connection:
        connection.execute(
            outbound_messages.insert().values(
                conversation_id=conversation_id,
                body={"kind": "text", "text": "hi"},
                status="sent",
                provider_message_id="wamid.OUT",
                next_attempt_at=NOW,
                created_at=NOW,
                updated_at=NOW,
            )
        )
    read = StatusUpdate(
        channel="whatsapp",
        account_id="106540352242922",
        user_id="15550001111",
        status="read",
        timestamp=NOW,
        provider_message_id="wamid.OUT",
    )
    unknown = StatusUpdate(
        channel="whatsapp",
        account_id="106540352242922",
        user_id="15550001111",
        status="read",
        timestamp=NOW,
        provider_message_id="wamid.NOT-OURS",
    )
    results = write_deliveries(
        db, [delivery([text("wamid.IN2"), read], now=NOW), delivery([unknown, text("wamid.IN")], now=NOW)]
    )
    assert results == [StoreResult(inserted=1, statuses=1), StoreResult(duplicates=1)]
    with db.connect() as connection:
        assert connection.execute(sa.select(outbound_messages.c.status)).scalar_one() == "read"


def test_a_webhook_of_one_status_is_applied_and_committed_alone(database_url: str) -> None:
    """One status per webhook is the common case: written as its own statement (autocommit on PostgreSQL), it must
    be committed, leave the pooled connection transactional, and a "sent" report must change nothing."""
    from chatops.db.connect import create_db_engine

    engine = create_db_engine(database_url, pool_size=1)
    try:
        store_events(engine, [text("wamid.IN")], now=NOW)
        conversation_id = conversation(engine, "15550001111").id
        with engine.begin() as connection:
            connection.execute(
                outbound_messages.insert().values(
                    conversation_id=conversation_id,
                    body={"kind": "text", "text": "hi"},
                    status="sent",
                    provider_message_id="wamid.OUT",
                    next_attempt_at=NOW,
                    created_at=NOW,
                    updated_at=NOW,
                )
            )

        def report(status: str) -> StoreResult:
            update = StatusUpdate(
                channel="whatsapp",
                account_id="106540352242922",
                user_id="15550001111",
                status=status,  # type: ignore[arg-type]
                timestamp=NOW,
                provider_message_id="wamid.OUT",
            )
            return store_events(engine, [update], now=NOW + timedelta(minutes=1))

        assert report("delivered") == StoreResult(statuses=1)
        assert report("sent") == StoreResult()  # never moves a row back
        assert report("delivered") == StoreResult()
        with engine.connect() as connection:  # the pool's one connection, after the writes
            transaction = connection.begin()
            connection.execute(outbound_messages.update().values(status="failed"))
            transaction.rollback()
            row = connection.execute(sa.select(outbound_messages.c.status, outbound_messages.c.updated_at)).one()
        assert tuple(row) == ("delivered", NOW + timedelta(minutes=1))
    finally:
        engine.dispose()


def test_the_write_leaves_pooled_connections_transactional(database_url: str) -> None:
    """PostgreSQL writes in autocommit; the connection must go back to the pool as it came: a worker's claim
    on it must still be one transaction that can roll back."""
    from chatops.db.connect import create_db_engine

    engine = create_db_engine(database_url, pool_size=1)
    try:
        store_events(engine, [text("wamid.A")], now=NOW)
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(inbound_messages.delete())
            transaction.rollback()
        assert [r.provider_message_id for r in stored(engine)] == ["wamid.A"]
    finally:
        engine.dispose()


def test_a_refused_write_stores_nothing_of_it(db: sa.Engine, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite does not enforce VARCHAR lengths")
    with pytest.raises(sa.exc.DataError, match="value too long"):
        write_deliveries(db, [delivery([text("wamid.OK")], now=NOW), delivery([text("x" * 300)], now=NOW)])
    assert stored(db) == []
    with pytest.raises(UnstorableError, match="the database refused a value: value too long"):
        store_events(db, [text("wamid.OK"), text("x" * 300)], now=NOW)
    assert stored(db) == []


@pytest.mark.parametrize("repeated", [False, True], ids=["one-statement", "report-by-report"])
def test_status_reports_of_several_webhooks_written_together(db: sa.Engine, repeated: bool) -> None:
    # Group commit writes a batch of status webhooks at once: on PostgreSQL as ONE UPDATE when every report names
    # its own message, report by report when one is named twice. Either way each row ends as the reports applied
    # in order would leave it, and each webhook counts the reports of its own that changed a row.
    whatsapp = add_conversation(db)
    messenger = add_conversation(db, channel="messenger", user_id="PSID1")
    rows = {
        name: add_outbound(db, whatsapp, status=status, provider_message_id=f"wamid.{name}", sent_at=NOW)
        for name, status in [("S", "sent"), ("D", "delivered"), ("R", "read"), ("F", "sent"), ("X", "failed")]
    }
    same_id = add_outbound(
        db, messenger, status="sent", provider_message_id="wamid.S", sent_at=NOW
    )  # ids are per channel
    failed = status_update("failed", "wamid.F", error_code=131047, error_title="Re-engagement message")
    reports = [
        [status_update("read", "wamid.S")],
        [status_update("delivered", "wamid.D")],  # already delivered: changes nothing
        [status_update("delivered", "wamid.R"), status_update("sent", "wamid.D")],  # nothing can move backwards
        [failed],
        [status_update("read", "wamid.X"), status_update("read", "wamid.UNKNOWN")],  # failed stays failed
    ]
    if repeated:
        reports.append([status_update("delivered", "wamid.S")])  # after the read: changes nothing
    later = NOW + timedelta(minutes=1)
    statements: list[str] = []
    count = lambda conn, cursor, statement, *args: statements.append(statement)  # noqa: E731

    sa.event.listen(db, "before_cursor_execute", count)
    try:
        results = write_deliveries(db, [delivery(events, now=later) for events in reports])
    finally:
        sa.event.remove(db, "before_cursor_execute", count)

    expected = [StoreResult(statuses=1), StoreResult(), StoreResult(), StoreResult(statuses=1), StoreResult()]
    assert results == expected + ([StoreResult()] if repeated else [])
    states = {name: (outbound(db, row).status, outbound(db, row).error_code) for name, row in rows.items()}
    assert states == {
        "S": ("read", None),
        "D": ("delivered", None),
        "R": ("read", None),
        "F": ("failed", 131047),
        "X": ("failed", None),
    }
    assert outbound(db, rows["F"]).error == "Re-engagement message"
    assert outbound(db, rows["F"]).next_attempt_at is None
    assert outbound(db, rows["S"]).updated_at == later
    assert outbound(db, same_id).status == "sent"
    if db.dialect.name == "postgresql":
        executed = [s for s in statements if not s.startswith("PREPARE")]  # once in a connection's life
        assert len(executed) == (7 if repeated else 1)  # one by one, a "sent" report sends none
