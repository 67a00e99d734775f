"""The webhook's durable write: conversations upserted, inbound messages inserted once, status updates applied.

Nothing is acknowledged before this commits (DESIGN.md section 2), so its cost is the webhook's latency. It is
kept low by doing per request only what must be done per request:

- PostgreSQL: ONE statement per write, run in autocommit (a single statement is its own transaction): the
  messages travel as arrays, a data-modifying CTE upserts their conversations and the outer INSERT adds the
  messages (``ON CONFLICT (channel, provider_message_id) DO NOTHING``). One round trip instead of BEGIN, an
  upsert and an insert per message, and COMMIT. The statement is prepared on the server once per pooled
  connection (``PREPARE``/``EXECUTE``), so it is not parsed and planned again for every webhook; this needs
  session-level connections (a pooler in transaction mode, such as PgBouncer's, does not keep them). The status
  reports of a write are ONE more UPDATE (arrays again), or one UPDATE per report when a message is named twice
  or a Messenger watermark is among them; a write that carries messages and reports runs in an explicit
  transaction.
- SQLite (in-process, so round trips cost nothing): statements compiled once with bound parameters, one
  ``BEGIN IMMEDIATE`` transaction, committed only while the file is still there and writable
  (:mod:`chatops.db.sqlite_file`: a deleted file takes writes without a murmur).

:func:`write_deliveries` stores several webhooks together (see :mod:`chatops.db.group_commit`); they are all
committed or none is, and each gets its own :class:`StoreResult`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from chatops.channels.events import Event, InboundMessage, StatusUpdate
from chatops.db.connect import storage_errors
from chatops.db.outbox import STATUS_RANK, apply_status, status_error, status_target
from chatops.db.sqlite_file import check_file
from chatops.db.tables import conversations, inbound_messages
from chatops.db.wakeups import announce


@dataclass(frozen=True)
class StoreResult:
    """What one webhook changed: new inbound messages, duplicates ignored, status updates applied."""

    inserted: int = 0
    duplicates: int = 0
    statuses: int = 0


@dataclass(frozen=True)
class Delivery:
    """One webhook's events, received at ``now``; its messages become due for a worker at ``available_at``."""

    events: Sequence[Event]
    now: datetime
    available_at: datetime


def delivery(events: Iterable[Event], *, now: datetime, debounce: float = 0.0) -> Delivery:
    """The :class:`Delivery` of a webhook received at ``now`` (``debounce`` seconds hold its messages back)."""
    return Delivery(tuple(events), now, now + timedelta(seconds=debounce))


def store_events(engine: sa.Engine, events: Iterable[Event], *, now: datetime, debounce: float = 0.0) -> StoreResult:
    """Store a webhook's events in ONE transaction: upsert conversations, insert new inbound messages
    (deduplicated on channel + provider id), apply status updates.

    Raises StorageError when the database is unavailable (the webhook answers 503 and Meta retries), and
    UnstorableError when it refuses a value (400: retrying cannot help; nothing of the webhook is stored).
    """
    with storage_errors(engine):
        return write_deliveries(engine, [delivery(events, now=now, debounce=debounce)])[0]


def write_deliveries(engine: sa.Engine, deliveries: Sequence[Delivery]) -> list[StoreResult]:
    """Store every delivery's events in ONE transaction; one result per delivery, in order.

    A message id seen twice (in one delivery or two) is stored once and counted as inserted where it comes
    first. A connection found dead is replaced and the write tried once more. A SQLite file deleted, replaced
    or made read-only raises StorageError before anything is committed. Database errors propagate as
    SQLAlchemy's StatementError (DBAPIError included), or as the driver's ValueError/OverflowError for a value it
    cannot bind (nothing of any delivery committed); callers classify them with
    :func:`chatops.db.connect.storage_error`.
    """
    for attempt in (1, 2):
        try:
            with engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    results = _write_postgresql(connection, deliveries)
                else:
                    results = _write_sqlite(connection, deliveries)
            _wake_workers(engine, deliveries, results)
            return results
        except sa.exc.DBAPIError as exc:
            # A pooled connection found dead (the server restarted; pooled connections are not pinged while in
            # steady use, see chatops.db.connect): SQLAlchemy has invalidated it and its older siblings, so one
            # more attempt gets a fresh connection. Retrying is safe even if the server committed before the
            # connection died: the write is idempotent (messages deduplicate, the upsert converges); such a
            # message is then counted as a duplicate.
            if not (exc.connection_invalidated and attempt == 1):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def _wake_workers(engine: sa.Engine, deliveries: Sequence[Delivery], results: Sequence[StoreResult]) -> None:
    """Wake the workers (of every process, :mod:`chatops.db.wakeups`) for the new messages, when they are due (a
    debounce holds them back). After the commit and outside it: a NOTIFY in the write's own transaction would
    serialise every webhook's commit behind PostgreSQL's global notification lock."""
    for delay in {
        (d.available_at - d.now).total_seconds() for d, r in zip(deliveries, results, strict=True) if r.inserted
    }:
        announce(engine, "inbox", after=delay)


def _utc(value: datetime) -> datetime:
    # What UTCDateTime does for Core statements; the PostgreSQL statement below binds values itself.
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware datetime (UTC)")
    return value.astimezone(UTC)


# PostgreSQL ---------------------------------------------------------------------------------------------------

# Core could build this, but the SQL says more plainly what happens. Parameters are parallel arrays, one element
# per message, in arrival order (``ord``): the conversation upsert sees each conversation once (ON CONFLICT DO
# UPDATE may not touch a row twice in one statement), in key order (two concurrent writers lock rows in the same
# order, so they cannot deadlock on them); its values are what upserting message by message would leave: the
# last known user name and the newest provider timestamp. Messages are inserted in arrival order, so their ids
# keep it for the workers.
#
# It is a server-side prepared statement, PREPAREd once per pooled connection and then EXECUTEd: psycopg2 sends
# statements as text, and parsing and planning this one on every webhook was half of PostgreSQL's CPU per write
# (bench/README.md, issue 14). The parameters of EXECUTE still travel as literals, cast like those of PREPARE.
_PG_PARAMETERS = (
    ("ord", "integer[]"),
    ("channel", "varchar[]"),
    ("account_id", "varchar[]"),
    ("user_id", "varchar[]"),
    ("user_name", "varchar[]"),
    ("provider_message_id", "varchar[]"),
    ("kind", "varchar[]"),
    ("text", "text[]"),
    ("payload", "jsonb[]"),
    ("raw", "jsonb[]"),
    ("provider_timestamp", "timestamptz[]"),
    ("received_at", "timestamptz[]"),
    ("available_at", "timestamptz[]"),
)
_PG_COLUMNS = tuple(name for name, _ in _PG_PARAMETERS)
_PG_STATEMENT = "chatops_store_messages"
_PG_STORE = """
WITH incoming AS (
    SELECT * FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        AS t(ord, channel, account_id, user_id, user_name, provider_message_id, kind, text, payload, raw,
             provider_timestamp, received_at, available_at)
), upserted AS (
    INSERT INTO conversations AS c
        (channel, account_id, user_id, user_name, state, mode, turn_count, last_inbound_at, created_at, updated_at)
    SELECT channel, account_id, user_id,
           (array_agg(user_name ORDER BY ord DESC) FILTER (WHERE user_name IS NOT NULL))[1],
           '{}', 'bot', 0, max(provider_timestamp), max(received_at), max(received_at)
    FROM incoming
    GROUP BY channel, account_id, user_id
    ORDER BY channel, account_id, user_id
    ON CONFLICT (channel, account_id, user_id) DO UPDATE SET
        user_name = coalesce(excluded.user_name, c.user_name),
        last_inbound_at = greatest(c.last_inbound_at, excluded.last_inbound_at),
        updated_at = excluded.updated_at
    RETURNING c.id, c.channel, c.account_id, c.user_id
)
INSERT INTO inbound_messages
    (conversation_id, channel, provider_message_id, kind, text, payload, raw, provider_timestamp, received_at,
     available_at, status, attempts)
SELECT u.id, i.channel, i.provider_message_id, i.kind, i.text, i.payload, i.raw, i.provider_timestamp,
       i.received_at, i.available_at, 'pending', 0
FROM incoming i JOIN upserted u USING (channel, account_id, user_id)
ORDER BY i.ord
ON CONFLICT (channel, provider_message_id) DO NOTHING
RETURNING channel, provider_message_id
"""
_PG_PREPARE = f"PREPARE {_PG_STATEMENT} ({', '.join(t for _, t in _PG_PARAMETERS)}) AS {_PG_STORE}"
_PG_EXECUTE = f"EXECUTE {_PG_STATEMENT} ({', '.join(f'%({n})s::{t}' for n, t in _PG_PARAMETERS)})"


def _write_postgresql(connection: sa.Connection, deliveries: Sequence[Delivery]) -> list[StoreResult]:
    messages, updates = _split(deliveries)
    batched = _batchable_statuses(updates)
    if not updates or (not messages and (batched is not None or len(updates) == 1)):
        # One statement at most: the messages, or the status reports (Meta sends them one per webhook; group
        # commit gathers them). It is the whole transaction, so autocommit saves BEGIN and COMMIT.
        with _driver_autocommit(connection):
            if messages:
                new = _insert_postgresql(connection, deliveries, messages)
                return _results(deliveries, messages, new, [])
            if batched is not None:
                return _results(deliveries, messages, set(), _update_statuses(connection, deliveries, batched))
            index, update = updates[0]  # a Messenger watermark
            applied = [index] if apply_status(connection, update, now=deliveries[index].now) else []
            return _results(deliveries, messages, set(), applied)
    with connection.begin():
        new = _insert_postgresql(connection, deliveries, messages)
        if batched is not None:
            applied = _update_statuses(connection, deliveries, batched)
        else:
            applied = [i for i, update in updates if apply_status(connection, update, now=deliveries[i].now)]
    return _results(deliveries, messages, new, applied)


@contextmanager
def _driver_autocommit(connection: sa.Connection) -> Iterator[None]:
    """psycopg2's own autocommit switch for the block, put back before the connection returns to the pool.

    Not ``execution_options(isolation_level="AUTOCOMMIT")``: SQLAlchemy resets that on checkin with a
    ``SET default_transaction_isolation`` round trip, which doubled the round trips of a write. psycopg2 flips
    ``autocommit`` locally, and SQLAlchemy's rollback at checkin sends nothing when no transaction is open.
    """
    dbapi_connection: Any = connection.connection.dbapi_connection
    dbapi_connection.autocommit = True
    try:
        yield
    finally:
        if not dbapi_connection.closed:
            dbapi_connection.autocommit = False


def _insert_postgresql(
    connection: sa.Connection, deliveries: Sequence[Delivery], messages: list[tuple[int, InboundMessage]]
) -> set[tuple[str, str]]:
    """Run the statement; the (channel, provider id) of each message it inserted."""
    if not messages:
        return set()
    columns: dict[str, list[Any]] = {name: [] for name in _PG_COLUMNS}
    for ord_, (index, message) in enumerate(messages):
        d = deliveries[index]
        for name, value in zip(
            _PG_COLUMNS,
            (
                ord_,
                message.channel,
                message.account_id,
                message.user_id,
                message.user_name,
                message.provider_message_id,
                message.kind,
                message.text,
                json.dumps(message.payload),
                json.dumps(message.raw),
                _utc(message.timestamp),
                _utc(d.now),
                _utc(d.available_at),
            ),
            strict=True,
        ):
            columns[name].append(value)
    _prepare(connection, _PG_STATEMENT, _PG_PREPARE)
    rows = connection.exec_driver_sql(_PG_EXECUTE, columns).all()
    return {(row[0], row[1]) for row in rows}


def _prepare(connection: sa.Connection, name: str, prepare: str) -> None:
    """PREPARE statement ``name`` on this database connection, once in its life.

    ``Connection.info`` belongs to the pooled DBAPI connection, as does a prepared statement (it lives as long as
    the server session), so a replaced connection prepares again. PREPARE is not undone by a rollback.
    """
    if not connection.info.get(name):
        connection.exec_driver_sql(prepare)
        connection.info[name] = True


# One UPDATE for the status reports of a batch (what apply_status does report by report), joined to the
# reports as arrays: ``rank`` is the STATUS_RANK a row must be below to move, NULL for ``failed`` (any row not
# failed yet). It needs each row named once (an UPDATE changes a row once, however many reports match it), so a
# batch that names a message twice, or carries a Messenger watermark, is applied report by report instead.
# The channel is checked on the row's conversation by its primary key, after the provider id found the row: as
# a join on conversations, the planner (with statistics from before a burst of sends) read every outbound row
# of each conversation instead, 15-30 ms per batch. Prepared once per connection, as the messages' statement.
_PG_STATUS_RANK = "CASE o.status " + " ".join(f"WHEN '{s}' THEN {r}" for s, r in STATUS_RANK.items()) + " END"
_PG_UPDATE_STATUSES = f"""
UPDATE outbound_messages AS o SET
    status = u.status,
    updated_at = u.updated_at,
    next_attempt_at = CASE WHEN u.rank IS NULL THEN NULL ELSE o.next_attempt_at END,
    error_code = CASE WHEN u.rank IS NULL THEN u.error_code ELSE o.error_code END,
    error = CASE WHEN u.rank IS NULL THEN u.error ELSE o.error END
FROM unnest($1, $2, $3, $4, $5, $6, $7, $8)
        AS u(ord, channel, provider_message_id, status, rank, updated_at, error_code, error)
WHERE o.provider_message_id = u.provider_message_id
    AND (SELECT c.channel FROM conversations AS c WHERE c.id = o.conversation_id) = u.channel
    AND CASE WHEN u.rank IS NULL THEN o.status <> 'failed' ELSE {_PG_STATUS_RANK} < u.rank END
RETURNING u.ord
"""
_PG_STATUS_PARAMETERS = (
    ("ord", "integer[]"),
    ("channel", "varchar[]"),
    ("provider_message_id", "varchar[]"),
    ("status", "varchar[]"),
    ("rank", "integer[]"),
    ("updated_at", "timestamptz[]"),
    ("error_code", "integer[]"),
    ("error", "text[]"),
)
_PG_STATUS_STATEMENT = "chatops_update_statuses"
_PG_STATUS_PREPARE = (
    f"PREPARE {_PG_STATUS_STATEMENT} ({', '.join(t for _, t in _PG_STATUS_PARAMETERS)}) AS {_PG_UPDATE_STATUSES}"
)
_PG_STATUS_EXECUTE = f"EXECUTE {_PG_STATUS_STATEMENT} ({', '.join(f'%({n})s::{t}' for n, t in _PG_STATUS_PARAMETERS)})"


def _batchable_statuses(updates: list[tuple[int, StatusUpdate]]) -> list[tuple[int, StatusUpdate]] | None:
    """The reports that can change a row (``sent`` cannot), for one UPDATE; ``None`` when they must be applied
    one by one (a message id named twice, a Messenger watermark)."""
    batch = [(index, update) for index, update in updates if status_target(update) is not None]
    keys = {(update.channel, update.provider_message_id) for _, update in batch}
    if len(keys) < len(batch) or any(update.provider_message_id is None for _, update in batch):
        return None
    return batch


def _update_statuses(
    connection: sa.Connection, deliveries: Sequence[Delivery], updates: list[tuple[int, StatusUpdate]]
) -> list[int]:
    """Apply the reports in one statement; the delivery index of each report that changed a row."""
    if not updates:
        return []
    # In key order, as the messages' statement takes its conversations: two processes whose batches name the same
    # messages in other orders would otherwise lock them crosswise and wait for the deadlock detector (1 s).
    updates = sorted(updates, key=lambda item: (item[1].channel, item[1].provider_message_id or ""))
    columns: dict[str, list[Any]] = {name: [] for name, _ in _PG_STATUS_PARAMETERS}
    for ord_, (index, update) in enumerate(updates):
        target = status_target(update)
        assert target is not None
        status, rank = target
        for name, value in (
            ("ord", ord_),
            ("channel", update.channel),
            ("provider_message_id", update.provider_message_id),
            ("status", status),
            ("rank", rank),
            ("updated_at", _utc(deliveries[index].now)),
            ("error_code", update.error_code if rank is None else None),
            ("error", status_error(update) if rank is None else None),
        ):
            columns[name].append(value)
    _prepare(connection, _PG_STATUS_STATEMENT, _PG_STATUS_PREPARE)
    changed = {row[0] for row in connection.exec_driver_sql(_PG_STATUS_EXECUTE, columns)}
    return [index for ord_, (index, _) in enumerate(updates) if ord_ in changed]


# SQLite -------------------------------------------------------------------------------------------------------

# Built and compiled once (SQLAlchemy caches the compiled form by statement): a request only binds values.
_c, _m = conversations.c, inbound_messages.c
_sqlite_upsert = sqlite.insert(conversations).values(
    channel=sa.bindparam("channel"),
    account_id=sa.bindparam("account_id"),
    user_id=sa.bindparam("user_id"),
    user_name=sa.bindparam("user_name"),
    state=sa.bindparam("state", type_=conversations.c.state.type),
    mode="bot",
    turn_count=0,
    last_inbound_at=sa.bindparam("timestamp", type_=_c.last_inbound_at.type),
    created_at=sa.bindparam("now", type_=_c.created_at.type),
    updated_at=sa.bindparam("now", type_=_c.updated_at.type),
)
_SQLITE_UPSERT = _sqlite_upsert.on_conflict_do_update(
    index_elements=[_c.channel, _c.account_id, _c.user_id],
    set_={
        "user_name": sa.func.coalesce(_sqlite_upsert.excluded.user_name, _c.user_name),
        "last_inbound_at": sa.case(
            (
                sa.or_(
                    _c.last_inbound_at.is_(None),
                    _sqlite_upsert.excluded.last_inbound_at > _c.last_inbound_at,
                ),
                _sqlite_upsert.excluded.last_inbound_at,
            ),
            else_=_c.last_inbound_at,
        ),
        "updated_at": _sqlite_upsert.excluded.updated_at,
    },
).returning(_c.id)
_SQLITE_INSERT = (
    sqlite.insert(inbound_messages)
    .values(
        conversation_id=sa.bindparam("conversation_id"),
        channel=sa.bindparam("channel"),
        provider_message_id=sa.bindparam("provider_message_id"),
        kind=sa.bindparam("kind"),
        text=sa.bindparam("text"),
        payload=sa.bindparam("payload", type_=_m.payload.type),
        raw=sa.bindparam("raw", type_=_m.raw.type),
        provider_timestamp=sa.bindparam("timestamp", type_=_m.provider_timestamp.type),
        received_at=sa.bindparam("now", type_=_m.received_at.type),
        available_at=sa.bindparam("available_at", type_=_m.available_at.type),
        status="pending",
        attempts=0,
    )
    .on_conflict_do_nothing(index_elements=[_m.channel, _m.provider_message_id])
    .returning(_m.id)
)


def _write_sqlite(connection: sa.Connection, deliveries: Sequence[Delivery]) -> list[StoreResult]:
    messages: list[tuple[int, InboundMessage]] = []
    new: set[tuple[str, str]] = set()
    applied: list[int] = []
    with connection.begin():  # BEGIN IMMEDIATE (chatops.db.connect): the write lock up front
        for index, d in enumerate(deliveries):
            for event in d.events:
                if isinstance(event, InboundMessage):
                    messages.append((index, event))
                    if _insert_sqlite(connection, d, event):
                        new.add((event.channel, event.provider_message_id))
                elif isinstance(event, StatusUpdate) and apply_status(connection, event, now=d.now):
                    applied.append(index)
        check_file(connection.engine)  # just before the commit: nothing is acknowledged into a lost file
    return _results(deliveries, messages, new, applied)


def _insert_sqlite(connection: sa.Connection, d: Delivery, message: InboundMessage) -> bool:
    """Upsert the message's conversation and insert the message; whether it was new."""
    params: dict[str, Any] = {
        "channel": message.channel,
        "account_id": message.account_id,
        "user_id": message.user_id,
        "user_name": message.user_name,
        "state": {},
        "timestamp": message.timestamp,
        "now": d.now,
    }
    conversation_id = connection.execute(_SQLITE_UPSERT, params).scalar_one()
    row = connection.execute(
        _SQLITE_INSERT,
        {
            "conversation_id": conversation_id,
            "channel": message.channel,
            "provider_message_id": message.provider_message_id,
            "kind": message.kind,
            "text": message.text,
            "payload": message.payload,
            "raw": message.raw,
            "timestamp": message.timestamp,
            "now": d.now,
            "available_at": d.available_at,
        },
    ).first()
    return row is not None


# Both ---------------------------------------------------------------------------------------------------------


def _split(
    deliveries: Sequence[Delivery],
) -> tuple[list[tuple[int, InboundMessage]], list[tuple[int, StatusUpdate]]]:
    """The messages and the status updates of all deliveries, each with its delivery's index, in order."""
    messages: list[tuple[int, InboundMessage]] = []
    updates: list[tuple[int, StatusUpdate]] = []
    for index, d in enumerate(deliveries):
        for event in d.events:
            if isinstance(event, InboundMessage):
                messages.append((index, event))
            elif isinstance(event, StatusUpdate):
                updates.append((index, event))
    return messages, updates


def _results(
    deliveries: Sequence[Delivery],
    messages: list[tuple[int, InboundMessage]],
    new: set[tuple[str, str]],
    applied: list[int],
) -> list[StoreResult]:
    """Per delivery: a message counts as inserted where its id first appears, as a duplicate anywhere else."""
    inserted = [0] * len(deliveries)
    duplicates = [0] * len(deliveries)
    statuses = [0] * len(deliveries)
    counted: set[tuple[str, str]] = set()
    for index, message in messages:
        key = (message.channel, message.provider_message_id)
        if key in new and key not in counted:
            counted.add(key)
            inserted[index] += 1
        else:
            duplicates[index] += 1
    for index in applied:
        statuses[index] += 1
    return [StoreResult(*counts) for counts in zip(inserted, duplicates, statuses, strict=True)]
