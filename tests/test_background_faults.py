"""Workers and the sender against hostile values, plug-in code that ends threads, and a database that goes away.

What is proven here, in-process on real databases (the process-level proofs are in tests/test_server_faults.py):
provider strings that cannot be stored are cleaned; a value the database still refuses uses up attempts and ends
``failed``; SystemExit from plug-in code is counted before it ends the thread, and Background starts the thread
again; a long turn is not "stuck" while a turn past its lease is; a database outage is logged once each way and
retried with backoff; the sender fails a reply it cannot encode, and retries then fails one that raises a bug.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy import event

from chatops.channels.graph import GraphClient
from chatops.config.bot import load_bot
from chatops.config.settings import Settings, load_settings
from chatops.db.connect import create_db_engine
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from chatops.engine.runtime import Background, build_runtime
from chatops.engine.sender import OutboxSender, RetryPolicy
from chatops.engine.supervision import HEARTBEAT_GRACE, BackoffPolicy, Heartbeat, SupervisedThread
from chatops.engine.turn import FALLBACK_ERROR_TEXT
from chatops.engine.worker import Worker
from chatops.web.app import create_app
from tests.fakes.graph_api import FakeGraphAPI
from tests.harness import Clock
from tests.outbox import T0, WA_TOKEN, add_conversation, add_outbound, outbound
from tests.plugins import hostile
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text

SQLITE_ONLY = pytest.mark.parametrize("backend", ["sqlite"])
POSTGRES_ONLY = pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])


class HostileBot:
    """The hostile-provider bot, its Flask app (for signed webhooks) and workers, on one database and clock."""

    def __init__(self, folder: Path, database_url: str, db: sa.Engine, graph: FakeGraphAPI, **overrides: Any) -> None:
        self.clock = Clock()
        self.db = db
        self.settings: Settings = load_settings(
            database_url=database_url,
            whatsapp_app_secret=APP_SECRET,
            whatsapp_verify_token=VERIFY_TOKEN,
            whatsapp_access_token=ACCESS_TOKEN,
            graph_api_url=graph.graph_api_url,
            ai="offline",
            **overrides,
        )
        self.bot = load_bot(hostile.write_hostile_bot(folder))
        self.runtime = build_runtime(self.settings, self.bot)
        self.webhook = Webhook(create_app(self.settings, self.bot, db=db, clock=self.clock).test_client())
        self.sent = 0

    def send(self, text: str, *, wa_id: str = "15550001111") -> None:
        self.sent += 1
        body = whatsapp_text(
            text, wa_id=wa_id, message_id=f"wamid.H{self.sent}", timestamp=int(self.clock().timestamp())
        )
        response = self.webhook.post(body)
        assert response.status_code == 200, response.json

    def worker(self, name: str = "w0") -> Worker:
        return Worker(self.runtime, self.db, self.settings, clock=self.clock, name=name)

    def rows(self, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
        with self.db.connect() as connection:
            selected = [table.c[name] for name in columns]
            return [tuple(row) for row in connection.execute(sa.select(*selected).order_by(table.c.id))]


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


@pytest.fixture
def make_bot(
    tmp_path: Path, database_url: str, db: sa.Engine, graph: FakeGraphAPI
) -> Iterator[Callable[..., HostileBot]]:
    made: list[HostileBot] = []

    def make(**overrides: Any) -> HostileBot:
        made.append(HostileBot(tmp_path, database_url, db, graph, **overrides))
        return made[-1]

    yield make
    for bot in made:
        bot.runtime.variables.runner.close()


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)
    return value


# Hostile provider values -------------------------------------------------------------------------------------


def test_provider_strings_that_cannot_be_stored_are_cleaned_and_answered(make_bot: Callable[..., HostileBot]) -> None:
    bot = make_bot()
    bot.send("surrogate please", wa_id="15550000001")
    bot.send("nul please", wa_id="15550000002")
    worker = bot.worker()
    assert worker.work_once()
    assert worker.work_once()
    assert bot.rows(inbound_messages, "status", "attempts") == [("done", 1), ("done", 1)]
    assert [body["text"] for (body,) in bot.rows(outbound_messages, "body")] == [
        "Value: lone \ufffd surrogate {'key \ufffd': 'v'}",
        "Value: nul \ufffd here {}",
    ]
    snapshots = [variables["hostile"] for (variables,) in bot.rows(turns, "variables")]
    assert snapshots == [
        {"value": "lone \ufffd surrogate", "extra": {"key \ufffd": "v"}},
        {"value": "nul \ufffd here", "extra": {}},
    ]


@POSTGRES_ONLY  # SQLite keeps JSON as text and stores NaN; PostgreSQL's jsonb refuses it
def test_a_value_the_database_refuses_uses_up_attempts_and_ends_failed(make_bot: Callable[..., HostileBot]) -> None:
    bot = make_bot(turn_max_attempts=2)
    bot.send("nan please")
    worker = bot.worker()
    assert worker.work_once()
    [(status, attempts, error)] = bot.rows(inbound_messages, "status", "attempts", "error")
    assert (status, attempts) == ("pending", 1)
    assert error.startswith("UnstorableError: the database refused a value")
    assert not worker.work_once()  # backing off
    bot.clock.advance(3)
    assert worker.work_once()
    [(status, attempts, error)] = bot.rows(inbound_messages, "status", "attempts", "error")
    assert (status, attempts) == ("failed", 2)
    assert "UnstorableError" in error
    [(body,)] = bot.rows(outbound_messages, "body")
    assert body["text"] == FALLBACK_ERROR_TEXT
    [(turn_error,)] = bot.rows(turns, "error")
    assert turn_error == error
    bot.send("plain please", wa_id="15550000009")
    assert worker.work_once()
    assert bot.rows(inbound_messages, "status")[-1] == ("done",)


# Plug-in code that ends the thread ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "raised"), [("exit now", SystemExit), ("interrupt now", KeyboardInterrupt)])
def test_systemexit_from_a_provider_is_counted_as_an_attempt_before_it_ends_the_thread(
    make_bot: Callable[..., HostileBot], text: str, raised: type[BaseException]
) -> None:
    bot = make_bot()
    bot.send(text)
    with pytest.raises(raised):
        bot.worker().work_once()
    [(status, attempts, error)] = bot.rows(inbound_messages, "status", "attempts", "error")
    assert (status, attempts) == ("pending", 1)  # a poisoned message cannot kill workers for ever
    assert error.startswith(raised.__name__)
    assert bot.rows(conversations, "locked_by") == [(None,)]  # the lease was given back


def test_background_reports_a_dead_worker_and_starts_it_again(
    make_bot: Callable[..., HostileBot], db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    bot = make_bot(turn_max_attempts=1)
    background = Background(bot.settings, bot.bot, db, workers=1, clock=bot.clock, runtime=bot.runtime)
    assert background.problems() == []
    bot.send("exit now")
    background.start()
    try:
        [problem] = wait_until(background.problems, timeout=10, what="a problem")
        assert problem == f"worker {background.workers[0].name}: thread died; it is restarted within 1.25s"
        wait_until(lambda: background.threads[0].restarts == 1, timeout=10, what="the restart")
        assert background.problems() == []
        bot.send("plain please", wa_id="15550000002")
        wait_until(lambda: bot.rows(inbound_messages, "status")[-1] == ("done",), timeout=10, what="an answer")
    finally:
        background.stop(timeout=10)
    assert bot.rows(inbound_messages, "status") == [("failed",), ("done",)]
    died = [r for r in caplog.records if "thread died: SystemExit: 3" in r.getMessage()]
    assert len(died) == 1
    assert died[0].exc_info is not None  # with its traceback
    assert "the thread had died; started it again (restart 1)" in caplog.text


# Heartbeat ---------------------------------------------------------------------------------------------------


def test_a_turn_within_stuck_seconds_is_not_stuck_but_one_past_it_is(make_bot: Callable[..., HostileBot]) -> None:
    bot = make_bot()
    seconds = [1000.0]
    worker = bot.worker()
    worker.heartbeat = Heartbeat(clock=lambda: seconds[0])
    supervised = SupervisedThread("worker w0", worker.run, worker.heartbeat)
    lease = bot.settings.stuck_seconds
    hostile.RELEASE.clear()
    hostile.BLOCKED.clear()
    bot.send("block please")
    stop = threading.Event()
    supervised.start(stop)
    try:
        assert hostile.BLOCKED.wait(10), "the turn reached the provider"
        seconds[0] += lease - 1  # a slow AI or provider call, still within CHATOPS_STUCK_SECONDS
        assert supervised.problem() is None
        seconds[0] += 2 + HEARTBEAT_GRACE
        assert (
            supervised.problem()
            == f"worker w0: no progress within its heartbeat of {lease + HEARTBEAT_GRACE:.0f}s (stuck?)"
        )
    finally:
        hostile.RELEASE.set()
        stop.set()
        assert supervised.thread is not None
        supervised.thread.join(10)
    assert bot.rows(inbound_messages, "status") == [("done",)]


# Database outage ---------------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_its_cap() -> None:
    policy = BackoffPolicy()
    assert [policy.delay(n) for n in range(9)] == [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert policy.delay(10_000) == 10.0


@SQLITE_ONLY  # a database file in a folder that does not exist yet: unavailable, then available, in-process
def test_an_outage_is_logged_once_each_way_and_retried_with_backoff(
    tmp_path: Path,
    database_url: str,
    db: sa.Engine,
    make_bot: Callable[..., HostileBot],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bot = make_bot()
    missing = tmp_path / "not-yet" / "chatops.db"
    away = create_db_engine(f"sqlite:///{missing}")
    failures: list[float] = []
    event.listen(away, "handle_error", lambda _context: failures.append(time.monotonic()))
    background = Background(bot.settings, bot.bot, away, workers=2, clock=bot.clock, runtime=bot.runtime)
    caplog.set_level(logging.INFO)
    background.start()
    try:
        time.sleep(1.6)
        down = [r for r in caplog.records if "database unavailable" in r.getMessage()]
        assert len(down) == 1, caplog.text
        assert down[0].levelno == logging.ERROR
        # Three loops each retry at 0, 0.25, 0.75 and 1.75 s: without backoff they would poll every 0.2 s (workers)
        # and 0.05 s (sender), about 45 failures. One more: the bot-reload watch's baseline, read at construction.
        assert 3 <= len(failures) <= 3 * 4 + 1
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR and r is not down[0]], caplog.text
        assert background.problems() == []  # the threads are alive and beating: the outage is /readyz's own check

        bot.send("plain please")  # stored in the test's database, which becomes the missing file below
        db.dispose()  # the last connection to close checkpoints the WAL into the file
        missing.parent.mkdir()
        shutil.copyfile(database_url.removeprefix("sqlite:///"), missing)
        wait_until(lambda: "database available again" in caplog.text, timeout=15, what="the database is back")

        def answered() -> bool:
            with away.connect() as connection:
                return connection.execute(sa.select(inbound_messages.c.status)).scalar() == "done"

        wait_until(answered, timeout=10, what="the answer, once the database is back")
    finally:
        background.stop(timeout=10)
        away.dispose()
    assert len([r for r in caplog.records if "database available again" in r.getMessage()]) == 1


# The sender --------------------------------------------------------------------------------------------------


def make_sender(db: sa.Engine, graph: GraphClient, **options: Any) -> OutboxSender:
    settings = Settings(whatsapp_access_token=SecretStr(WA_TOKEN))
    return OutboxSender(
        settings, db, graph, clock=lambda: T0, random=lambda: 0.5, token_source=lambda _c: None, **options
    )


@SQLITE_ONLY  # PostgreSQL refuses to store a lone surrogate at all; SQLite keeps it escaped in JSON text
def test_the_sender_fails_a_reply_it_cannot_encode_and_goes_on(db: sa.Engine, graph: FakeGraphAPI) -> None:
    bad = add_outbound(db, add_conversation(db, user_id="15550000001"), "lone \ud800 surrogate")
    good = add_outbound(db, add_conversation(db, user_id="15550000002"), "fine")
    with httpx.Client() as http:
        sender = make_sender(db, GraphClient(http, base_url=graph.graph_api_url))
        stop = threading.Event()
        thread = threading.Thread(target=sender.run, args=(stop,), kwargs={"poll_interval": 0.05})
        thread.start()
        try:
            wait_until(
                lambda: all(outbound(db, i).status not in ("pending", "sending") for i in (bad, good)),
                timeout=10,
                what="both rows done",
            )
            assert thread.is_alive()
        finally:
            stop.set()
            thread.join(10)
            sender.close()
    row = outbound(db, bad)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.error.startswith("UnicodeEncodeError: 'utf-8' codec can't encode character '\\ud800'")
    assert outbound(db, good).status == "sent"


def test_the_sender_retries_a_send_that_raises_a_bug_then_fails_it(
    db: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(_request: httpx.Request) -> httpx.Response:
        raise RuntimeError("bug in a transport")

    row_id = add_outbound(db, add_conversation(db), "hello")
    with httpx.Client(transport=httpx.MockTransport(broken)) as http:
        sender = make_sender(db, GraphClient(http, base_url="http://graph.invalid"), policy=RetryPolicy(max_attempts=2))
        assert sender.send_due() == 1
        row = outbound(db, row_id)
        assert (row.status, row.attempts, row.error) == ("pending", 1, "RuntimeError: bug in a transport")
        assert sender.send_due() == 0  # backing off: due again in 0.75 s (jitter 0.5)
        with db.begin() as connection:  # the clock is fixed at T0: move the row's retry time there instead
            connection.execute(outbound_messages.update().values(next_attempt_at=T0))
        assert sender.send_due() == 1
        sender.close()
    row = outbound(db, row_id)
    assert (row.status, row.attempts, row.error) == ("failed", 2, "RuntimeError: bug in a transport")
    logged = [r for r in caplog.records if r.getMessage().startswith(f"outbound {row_id}")]
    assert len(logged) == 2
    assert all(r.exc_info for r in logged)
