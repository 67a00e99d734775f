"""Webhook → inbox → worker → outbox on SQLite and PostgreSQL: order, leases, retries, staleness, debounce."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatops.ai.offline import OfflineResponder
from chatops.ai.prompt import ChatRequest
from chatops.ai.protocol import ChatResult, IntentResult
from chatops.db.inbox import LeaseLost, claim_conversation, complete_turn
from chatops.db.tables import inbound_messages, outbound_messages, turns
from chatops.engine.turn import FALLBACK_ERROR_TEXT, BotRuntime
from tests.harness import Harness
from tests.webhook import whatsapp_text


@pytest.fixture
def harness(tmp_path: Path, database_url: str, db: sa.Engine) -> Iterator[Harness]:
    harness = Harness(tmp_path, database_url, db)
    yield harness
    harness.runtime.variables.runner.close()


def test_a_message_becomes_a_turn_and_pending_replies(harness: Harness) -> None:
    harness.send("hello", message_id="wamid.first")
    assert harness.drain() == 1
    assert harness.rows(inbound_messages, "status") == [("done",)]
    [(stage_before, stage_after, error)] = harness.rows(turns, "stage_before", "stage_after", "error")
    assert (stage_before, stage_after, error) == (None, "menu", None)
    [(body, status, reply_to)] = harness.rows(outbound_messages, "body", "status", "reply_to")
    assert status == "pending"
    assert reply_to == "wamid.first"  # the sender marks the answered message read
    assert body["text"] == "Hi Ada! Welcome to Test Shop. You sent a text."
    assert [b["id"] for b in body["buttons"]] == ["track", "human"]
    assert harness.drain() == 0


def test_messages_of_one_conversation_are_answered_in_order_one_at_a_time(harness: Harness) -> None:
    for i in range(20):
        harness.send(f"message {i}")
    workers = [harness.worker(f"w{i}") for i in range(4)]
    threads = [threading.Thread(target=harness.drain, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    answered = harness.rows(turns, "user_text")
    assert [text for (text,) in answered] == [f"message {i}" for i in range(20)]
    assert {status for (status,) in harness.rows(inbound_messages, "status")} == {"done"}


def test_messages_already_stale_on_arrival_are_stored_not_answered(harness: Harness) -> None:
    sent = int(harness.clock().timestamp()) - 11 * 60  # stale_after is 10 minutes: a replay after an outage
    harness.webhook.post(whatsapp_text("old news", timestamp=sent))
    assert harness.drain() == 1
    assert harness.rows(inbound_messages, "status") == [("skipped",)]
    assert harness.rows(turns, "id") == []
    assert harness.rows(outbound_messages, "id") == []


def test_an_expired_lease_is_claimed_again_and_the_late_worker_discards_its_turn(harness: Harness) -> None:
    harness.send("hello")
    lease = timedelta(seconds=harness.settings.lease_seconds)
    crashed = claim_conversation(harness.db, worker_id="crashed", now=harness.clock(), lease=lease)
    assert crashed is not None
    assert harness.drain(harness.worker("other")) == 0  # leased: nobody else may take it
    harness.clock.advance(lease.total_seconds() + 1)
    assert harness.drain(harness.worker("other")) == 1
    with pytest.raises(LeaseLost):
        complete_turn(
            harness.db, crashed, worker_id="crashed", now=harness.clock(), lease=lease, answered=[], turn=None
        )
    assert len(harness.rows(turns, "id")) == 1


class FlakyAI(OfflineResponder):
    """An AIClient whose calls raise a non-chatops error (a bug) the first ``failures`` times."""

    def __init__(self, failures: int) -> None:
        self.failures = failures

    def reply(self, request: ChatRequest) -> ChatResult:
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("unexpected failure inside the AI client")
        return super().reply(request)

    def classify(self, request: ChatRequest, intents: Sequence[str]) -> IntentResult:
        return super().classify(request, intents)


def test_a_failing_turn_is_retried_with_backoff_then_answered(harness: Harness) -> None:
    harness.send("hello")
    harness.drain()  # welcome; now in `menu`, whose prompt asks the AI
    flaky = BotRuntime(harness.bot, harness.runtime.templates, harness.runtime.variables, FlakyAI(failures=2))
    worker = harness.worker(runtime=flaky)
    harness.send("tell me something")
    assert worker.work_once()
    assert harness.rows(inbound_messages, "status", "attempts")[-1] == ("pending", 1)
    assert not worker.work_once()  # backing off (2 s)
    harness.send("and another thing")
    assert not worker.work_once()  # the newer message waits behind the one being retried: order is kept
    harness.clock.advance(2)
    assert worker.work_once()
    assert harness.rows(inbound_messages, "attempts")[1] == (2,)
    harness.clock.advance(4)
    assert worker.work_once()
    assert worker.work_once()
    assert harness.rows(inbound_messages, "status") == [("done",)] * 3
    assert [text for (text,) in harness.rows(turns, "user_text")] == ["hello", "tell me something", "and another thing"]
    assert harness.rows(outbound_messages, "body")[-1][0]["text"].startswith("[offline AI]")


def test_a_turn_that_keeps_failing_is_marked_failed_and_apologises(harness: Harness) -> None:
    harness.send("hello")
    harness.drain()
    flaky = BotRuntime(harness.bot, harness.runtime.templates, harness.runtime.variables, FlakyAI(failures=99))
    worker = harness.worker(runtime=flaky)
    harness.send("tell me something")
    for _ in range(harness.settings.turn_max_attempts):
        assert worker.work_once()
        harness.clock.advance(30)  # past every backoff (2, 4, 8, 16 s)
    status, error = harness.rows(inbound_messages, "status", "error")[-1]
    assert status == "failed"
    assert "RuntimeError: unexpected failure inside the AI client" in error
    assert harness.rows(outbound_messages, "body")[-1][0]["text"] == FALLBACK_ERROR_TEXT
    assert not worker.work_once()


def test_debounce_answers_a_burst_as_one_turn(tmp_path: Path, database_url: str, db: sa.Engine) -> None:
    harness = Harness(tmp_path, database_url, db, debounce_seconds=2.0)
    harness.send("first")
    harness.clock.advance(1)
    harness.send("second")
    assert harness.drain() == 0  # the first message's window is still open
    harness.clock.advance(1)
    assert harness.drain() == 1
    assert harness.rows(turns, "user_text") == [("first\nsecond",)]
    harness.runtime.variables.runner.close()


def test_handoff_silences_the_bot(harness: Harness) -> None:
    harness.send("hello")
    harness.drain()
    harness.send("I need a human")
    harness.drain()
    harness.send("hello? anyone?")
    assert harness.drain() == 0
    assert len(harness.rows(outbound_messages, "id")) == 2


def test_a_worker_can_be_limited_to_one_conversation(harness: Harness) -> None:
    harness.send("hello", wa_id="15550000001")
    harness.send("hello", wa_id="15550000002")
    with harness.db.connect() as connection:
        second = connection.execute(
            sa.select(inbound_messages.c.conversation_id).order_by(inbound_messages.c.id.desc()).limit(1)
        ).scalar_one()
    worker = harness.worker()
    assert worker.work_once(only=second)
    assert not worker.work_once(only=second)
    assert harness.rows(inbound_messages, "status") == [("pending",), ("done",)]


def test_a_stored_message_that_cannot_be_read_back_fails_and_the_next_one_is_answered(harness: Harness) -> None:
    harness.send("first", message_id="wamid.broken")
    harness.send("second", message_id="wamid.fine")
    with harness.db.begin() as connection:  # a payload that is not an object, as a bug or a hand edit leaves it
        connection.execute(
            sa.update(inbound_messages)
            .where(inbound_messages.c.provider_message_id == "wamid.broken")
            .values(payload=["not", "an", "object"])
        )

    harness.drain()

    assert harness.rows(inbound_messages, "provider_message_id", "status") == [
        ("wamid.broken", "failed"),
        ("wamid.fine", "done"),
    ]
    [(error,)] = [row for row in harness.rows(inbound_messages, "error") if row != (None,)]
    assert error.startswith("unreadable stored message: ValueError")
    [(reply_to,)] = harness.rows(outbound_messages, "reply_to")
    assert reply_to == "wamid.fine"
