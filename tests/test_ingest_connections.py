"""Dead pooled connections: the webhook write survives a server restart; idle connections are pinged first.

The server restart is real: every backend of the test database is terminated (pg_terminate_backend), so the
pooled connections die exactly as they do when PostgreSQL restarts.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from chatops.channels.events import InboundMessage
from chatops.db.connect import check_connection, create_db_engine, parse_database_url
from chatops.db.ingest import StoreResult, store_events
from chatops.db.wakeups import wakeups_for
from chatops.errors import StorageError

pytestmark = pytest.mark.postgres
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def backend() -> str:
    """PostgreSQL only (skipped without CHATOPS_TEST_DATABASE_URL): SQLite is a file, it has no connections to lose."""
    return "postgresql"


@pytest.fixture
def postgres_url(database_url: str) -> str:
    return database_url


def restart_server(url: str) -> None:
    """Terminate every other backend of the database, as a server restart would."""
    admin = sa.create_engine(parse_database_url(url), poolclass=sa.NullPool)
    try:
        with admin.connect() as connection:
            killed = connection.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        assert killed >= 1
    finally:
        admin.dispose()


def message(message_id: str) -> InboundMessage:
    return InboundMessage(
        channel="whatsapp",
        account_id="106540352242922",
        user_id="15550001111",
        provider_message_id=message_id,
        kind="text",
        timestamp=NOW,
        text="hello",
    )


@pytest.fixture
def engine_factory() -> Iterator[list[sa.Engine]]:
    engines: list[sa.Engine] = []
    yield engines
    for engine in engines:
        engine.dispose()


def test_the_webhook_write_retries_once_on_a_dead_pooled_connection(
    postgres_url: str, engine_factory: list[sa.Engine]
) -> None:
    engine = create_db_engine(postgres_url, pool_size=2)
    engine_factory.append(engine)
    assert store_events(engine, [message("wamid.BEFORE")], now=NOW) == StoreResult(inserted=1)
    restart_server(postgres_url)
    assert store_events(engine, [message("wamid.AFTER")], now=NOW) == StoreResult(inserted=1)
    with engine.connect() as connection:
        ids = connection.execute(sa.text("SELECT provider_message_id FROM inbound_messages ORDER BY id")).scalars()
        assert list(ids) == ["wamid.BEFORE", "wamid.AFTER"]


def test_an_idle_connection_is_pinged_and_replaced(postgres_url: str, engine_factory: list[sa.Engine]) -> None:
    engine = create_db_engine(postgres_url, pool_size=1, ping_after_idle=0.0)
    engine_factory.append(engine)
    check_connection(engine)
    restart_server(postgres_url)
    check_connection(engine)  # the ping found the pooled connection dead; the pool connected anew


def test_a_busy_connection_is_not_pinged_and_fails_once(postgres_url: str, engine_factory: list[sa.Engine]) -> None:
    engine = create_db_engine(postgres_url, pool_size=1, ping_after_idle=3600.0)
    engine_factory.append(engine)
    check_connection(engine)
    restart_server(postgres_url)
    with pytest.raises(StorageError, match="cannot use the database"):
        check_connection(engine)  # no ping in steady use: the query finds the connection dead …
    check_connection(engine)  # … and the pool has replaced it for the next one


def test_the_idle_ping_survives_dispose(postgres_url: str, engine_factory: list[sa.Engine]) -> None:
    engine = create_db_engine(postgres_url, pool_size=1, ping_after_idle=0.0)
    engine_factory.append(engine)
    engine.dispose()  # a new pool: the listeners must come along
    check_connection(engine)
    restart_server(postgres_url)
    check_connection(engine)


def test_the_write_is_prepared_once_per_connection_and_again_on_a_new_one(
    postgres_url: str, engine_factory: list[sa.Engine]
) -> None:
    engine = create_db_engine(postgres_url, pool_size=1)
    engine_factory.append(engine)

    def store(message_id: str) -> StoreResult:
        result = store_events(engine, [message(message_id)], now=NOW)
        # Its NOTIFY goes out on a pooled connection from the notifier thread; once it is sent, the pool's one
        # connection is free again (else the next write or look would open an overflow connection).
        assert wakeups_for(engine).flush(10.0)
        return result

    def prepared() -> list[tuple[str, int]]:
        with engine.connect() as connection:  # the pool's one connection: the one the writes used
            query = "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements"
            return [tuple(row) for row in connection.exec_driver_sql(query)]

    for n in range(3):
        assert store(f"wamid.P{n}") == StoreResult(inserted=1)
    assert prepared() == [("chatops_store_messages", 3)]  # prepared once, executed three times
    restart_server(postgres_url)  # the session and its prepared statement are gone
    assert store("wamid.P3") == StoreResult(inserted=1)
    assert prepared() == [("chatops_store_messages", 1)]
