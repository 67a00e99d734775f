"""The outbox: claim/mark queries, status webhooks, and the sender against the loopback fake Graph API.

Every test runs on SQLite and PostgreSQL. Time is a :class:`Clock` the test advances; jitter is fixed at 0.5.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from chatops.channels.events import Button, Channel, OutboundMessage
from chatops.channels.graph import GraphClient
from chatops.config.settings import Settings
from chatops.db.leases import recover_expired_sends
from chatops.db.outbox import (
    apply_status,
    claim_outbound,
    count_pending,
    mark_sent,
    release_outbound,
)
from chatops.db.tables import conversations, outbound_messages
from chatops.engine.sender import OUTSIDE_WINDOW_ERROR, OutboxSender, RetryPolicy, TokenSource
from chatops.errors import ConfigError
from tests.fakes.graph_api import FakeGraphAPI, RecordedRequest, Reply
from tests.outbox import (
    PAGE_TOKEN,
    PHONE_ID,
    T0,
    WA_TOKEN,
    add_conversation,
    add_outbound,
    outbound,
    status_update,
)

TEMPLATE = OutboundMessage(kind="template", template_name="follow_up", template_language="de_DE")

# Readers ---------------------------------------------------------------------------------------------------


def user_of(db: sa.Engine, conversation_id: int) -> str:
    with db.connect() as connection:
        query = sa.select(conversations.c.user_id).where(conversations.c.id == conversation_id)
        return str(connection.execute(query).scalar_one())


def sends(fake: FakeGraphAPI) -> list[RecordedRequest]:
    """Message sends only (no WhatsApp mark-as-read)."""
    return [r for r in fake.requests if not (isinstance(r.body, dict) and r.body.get("status") == "read")]


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Tokens:
    """A scriptable token source: what the environment would say now, and how often it was asked."""

    values: dict[str, str | None] = field(default_factory=dict)
    asked: int = 0

    def __call__(self, channel: Channel) -> str | None:
        self.asked += 1
        return self.values.get(channel)


# Fixtures ----------------------------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


@pytest.fixture
def clock() -> Clock:
    return Clock()


SenderFactory = Callable[..., OutboxSender]


@pytest.fixture
def make_sender(db: sa.Engine, fake: FakeGraphAPI, clock: Clock) -> Iterator[SenderFactory]:
    """Build senders on ``db`` talking to ``fake``; one thread unless asked, so scripted replies match rows."""
    made: list[OutboxSender] = []
    http = httpx.Client()

    def make(
        *,
        whatsapp_token: str | None = WA_TOKEN,
        page_token: str | None = PAGE_TOKEN,
        timeout: float = 5.0,
        token_source: TokenSource | None = None,
        **options: Any,
    ) -> OutboxSender:
        settings = Settings(
            whatsapp_access_token=SecretStr(whatsapp_token) if whatsapp_token else None,
            messenger_page_token=SecretStr(page_token) if page_token else None,
            graph_api_url=fake.graph_api_url,
            graph_timeout=timeout,
        )
        options.setdefault("concurrency", 1)
        sender = OutboxSender(
            settings,
            db,
            GraphClient.from_settings(settings, http),
            clock=clock,
            random=lambda: 0.5,
            token_source=token_source or Tokens(),
            **options,
        )
        made.append(sender)
        return sender

    yield make
    for sender in made:
        sender.close()
    http.close()


# Sending -----------------------------------------------------------------------------------------------------


def test_whatsapp_send_stores_the_provider_id_and_marks_the_answer_read(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    conversation = add_conversation(db)
    row_id = add_outbound(db, conversation, "Your order ships today", reply_to="wamid.INBOUND1")

    assert make_sender().send_due() == 1

    send, read = fake.requests
    assert send.path == f"/{PHONE_ID}/messages"
    assert send.headers["authorization"] == f"Bearer {WA_TOKEN}"
    assert send.body == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": user_of(db, conversation),
        "type": "text",
        "text": {"preview_url": False, "body": "Your order ships today"},
    }
    assert read.path == f"/{PHONE_ID}/messages"
    assert read.body == {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.INBOUND1"}
    row = outbound(db, row_id)
    assert (row.status, row.provider_message_id, row.attempts, row.sent_at) == ("sent", "wamid.FAKE000000000001", 1, T0)
    assert (row.error_code, row.error) == (None, None)


def test_messenger_send_uses_the_page_token_and_quick_replies(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    conversation = add_conversation(db, channel="messenger")
    message = OutboundMessage(text="Track it?", buttons=(Button("track", "Track"),))
    row_id = add_outbound(db, conversation, message, reply_to="m_INBOUND")

    make_sender().send_due()

    (send,) = fake.requests  # no mark-as-read call on Messenger
    assert send.path == "/me/messages"
    assert send.query == {}  # the token travels in the header, never in the URL
    assert send.headers["authorization"] == f"Bearer {PAGE_TOKEN}"
    assert send.body == {
        "recipient": {"id": user_of(db, conversation)},
        "messaging_type": "RESPONSE",
        "message": {
            "text": "Track it?",
            "quick_replies": [{"content_type": "text", "title": "Track", "payload": "track"}],
        },
    }
    assert outbound(db, row_id).provider_message_id == "m_FAKE000000000001"


def test_rows_of_different_conversations_are_sent_concurrently_one_per_conversation(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    fake.latency = 0.2
    rows = [add_outbound(db, add_conversation(db), f"to {i}") for i in range(4)]
    busy = add_conversation(db)
    second = add_outbound(db, busy, "first")
    later = add_outbound(db, busy, "second")
    sender = make_sender(concurrency=8)

    started = datetime.now(UTC)
    assert sender.send_due() == 5  # `later` waits for `second`
    assert datetime.now(UTC) - started < timedelta(seconds=0.2 * 4)
    assert {outbound(db, r).status for r in [*rows, second]} == {"sent"}
    assert outbound(db, later).status == "pending"
    assert sender.send_due() == 1
    assert outbound(db, later).status == "sent"


def test_order_within_a_conversation_holds_across_retries(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock
) -> None:
    alice = add_conversation(db)
    first = add_outbound(db, alice, "one")
    second = add_outbound(db, alice, "two")
    bob_row = add_outbound(db, add_conversation(db), "for bob")
    fake.script(Reply.error(130429, message="(#130429) Rate limit hit"))
    sender = make_sender()

    assert sender.send_due() == 2  # alice's first (throttled) and bob's; alice's second waits
    assert outbound(db, first).status == "pending"
    assert outbound(db, bob_row).status == "sent"
    assert sender.send_due() == 0  # the retry is not due and nothing may overtake it
    clock.advance(1)
    assert sender.send_due() == 1
    assert sender.send_due() == 1
    texts = [r.body["text"]["body"] for r in sends(fake) if r.body["to"] == user_of(db, alice)]
    assert texts == ["one", "one", "two"]
    assert outbound(db, second).status == "sent"


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(Reply.error(130429, message="(#130429) Rate limit hit"), id="130429"),
        pytest.param(Reply.error(131000, status=500, message="Something went wrong"), id="http-500"),
        pytest.param(Reply.error(131056, message="(#131056) pair rate limit"), id="131056"),
    ],
)
def test_transient_errors_are_retried_with_exponential_backoff(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock, failure: Reply
) -> None:
    row_id = add_outbound(db, add_conversation(db))
    fake.script(failure, failure)
    sender = make_sender()

    sender.send_due()
    row = outbound(db, row_id)
    assert (row.status, row.attempts, row.error_code) == ("pending", 1, failure.error_code)
    assert row.next_attempt_at == T0 + timedelta(seconds=0.75)  # 1 s, jitter 0.5 → 0.75 s
    assert f"code {failure.error_code}" in row.error

    clock.advance(0.75)
    sender.send_due()
    row = outbound(db, row_id)
    assert (row.status, row.attempts) == ("pending", 2)
    assert row.next_attempt_at == clock.now + timedelta(seconds=1.5)  # 2 s, jitter 0.5

    clock.advance(1.4)
    assert sender.send_due() == 0  # not due yet
    clock.advance(0.1)
    assert sender.send_due() == 1
    row = outbound(db, row_id)
    assert (row.status, row.attempts, row.error_code, row.error) == ("sent", 3, None, None)
    assert len(sends(fake)) == 3


def test_a_timeout_is_retried(db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock) -> None:
    row_id = add_outbound(db, add_conversation(db))
    fake.script(Reply.delayed(3.0))
    sender = make_sender(timeout=0.3)

    sender.send_due()
    row = outbound(db, row_id)
    assert (row.status, row.error_code, row.next_attempt_at) == ("pending", None, T0 + timedelta(seconds=0.75))
    assert "timed out" in row.error
    clock.advance(1)
    sender.send_due()
    assert outbound(db, row_id).status == "sent"


def test_retry_after_longer_than_the_backoff_is_honoured(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    row_id = add_outbound(db, add_conversation(db))
    fake.script(Reply.error(4, retry_after=30, message="(#4) Application request limit reached"))
    make_sender().send_due()
    assert outbound(db, row_id).next_attempt_at == T0 + timedelta(seconds=30)


def test_transient_errors_fail_the_row_after_max_attempts(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock
) -> None:
    row_id = add_outbound(db, add_conversation(db))
    fake.script(*[Reply.error(130429)] * 3)
    sender = make_sender(policy=RetryPolicy(max_attempts=3))
    for _ in range(3):
        sender.send_due()
        clock.advance(60)
    row = outbound(db, row_id)
    assert (row.status, row.attempts, row.error_code) == ("failed", 3, 130429)
    assert row.error.startswith("gave up after 3 attempts: ")
    assert sender.send_due() == 0


def test_retry_policy_delays() -> None:
    policy = RetryPolicy()
    assert [policy.delay(n, jitter=1.0) for n in (1, 2, 3, 9, 10, 20)] == [1, 2, 4, 256, 300, 300]
    assert policy.delay(1, jitter=0.0) == 0.5
    assert policy.delay(3, jitter=0.0, retry_after=60) == 60
    assert policy.delay(3, jitter=1.0, retry_after=1) == 4


@pytest.mark.parametrize(
    ("channel", "failure", "code"),
    [
        ("whatsapp", Reply.error(131047, message="Re-engagement message"), 131047),
        ("whatsapp", Reply.error(131026, message="Message undeliverable"), 131026),
        ("whatsapp", Reply.error(100, message="(#100) Invalid parameter"), 100),
        ("messenger", Reply.error(551, message="This person isn't available right now."), 551),
        ("messenger", Reply.error(10, subcode=2018278, message="outside of allowed window"), 10),
    ],
)
def test_permanent_errors_fail_the_row_with_its_code(
    db: sa.Engine,
    fake: FakeGraphAPI,
    make_sender: SenderFactory,
    clock: Clock,
    channel: Channel,
    failure: Reply,
    code: int,
) -> None:
    row_id = add_outbound(db, add_conversation(db, channel=channel))
    fake.script(failure)
    sender = make_sender()
    sender.send_due()
    row = outbound(db, row_id)
    assert (row.status, row.attempts, row.error_code, row.provider_message_id) == ("failed", 1, code, None)
    assert failure.message in row.error
    clock.advance(3600)
    assert sender.send_due() == 0
    assert len(fake.requests) == 1


def test_a_message_the_builder_refuses_fails_without_a_request(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    row_id = add_outbound(db, add_conversation(db), "   ")
    make_sender().send_due()
    row = outbound(db, row_id)
    assert (row.status, row.error_code, row.error) == ("failed", None, "cannot send an empty WhatsApp message")
    assert fake.requests == []


def test_a_failed_mark_as_read_is_only_logged(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    row_id = add_outbound(db, add_conversation(db), reply_to="wamid.OLD")
    fake.script(Reply(), Reply.error(100, message="(#100) Invalid message_id"))
    make_sender().send_due()
    assert outbound(db, row_id).status == "sent"
    assert "marking wamid.OLD read failed" in caplog.text


# Token pause and missing credentials -------------------------------------------------------------------------


def test_token_error_pauses_the_channel_until_the_token_is_replaced(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    conversation = add_conversation(db)
    first = add_outbound(db, conversation, "one")
    add_outbound(db, add_conversation(db), "other user")
    messenger_row = add_outbound(db, add_conversation(db, channel="messenger"), "messenger still works")
    fake.script(Reply.error(190, status=401, subcode=463, message="Error validating access token"))
    tokens = Tokens({"whatsapp": WA_TOKEN})
    sender = make_sender(token_source=tokens, token_check_interval=30)

    sender.send_due(limit=2)  # the first WhatsApp row meets the 190; the second is not attempted
    row = outbound(db, first)
    assert (row.status, row.attempts, row.error_code) == ("pending", 0, 190)
    (problem,) = sender.problems()
    assert problem.startswith("whatsapp: sending is paused")
    assert "CHATOPS_WHATSAPP_ACCESS_TOKEN" in problem
    assert WA_TOKEN not in problem

    requests_while_paused = len(fake.requests)
    assert requests_while_paused == 1
    for _ in range(3):
        sender.send_due()
    assert outbound(db, messenger_row).status == "sent"  # the other channel goes on
    assert [r.path for r in fake.requests[requests_while_paused:]] == ["/me/messages"]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.getMessage().split(":")[0] for e in errors] == ["whatsapp"]
    assert "paused" in errors[0].getMessage()

    clock.advance(30)
    sender.send_due()  # the source still has the refused token: still paused
    assert tokens.asked == 1
    assert sender.problems() != []
    assert len(fake.requests) == requests_while_paused + 1

    tokens.values["whatsapp"] = "wa-token-2"
    clock.advance(10)
    assert sender.send_due() == 0  # not checked again before the interval
    clock.advance(20)
    assert sender.send_due() == 2
    assert sender.problems() == []
    assert outbound(db, first).status == "sent"
    assert outbound(db, first).attempts == 1
    new = [r for r in fake.requests if r.path == f"/{PHONE_ID}/messages"][-2:]
    assert {r.headers["authorization"] for r in new} == {"Bearer wa-token-2"}


def test_a_channel_without_a_token_keeps_its_rows_pending(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock
) -> None:
    row_id = add_outbound(db, add_conversation(db, channel="messenger"))
    tokens = Tokens()
    sender = make_sender(page_token=None, token_source=tokens, token_check_interval=5)

    assert sender.send_due() == 0
    row = outbound(db, row_id)
    assert (row.status, row.attempts) == ("pending", 0)
    assert sender.problems() == []  # rows of a channel this deployment does not send on: a warning, not unready
    assert sender.warnings() == ["messenger: 1 outbound message(s) wait: set CHATOPS_MESSENGER_PAGE_TOKEN to send them"]
    assert fake.requests == []

    tokens.values["messenger"] = "page-token-late"
    clock.advance(5)
    assert sender.send_due() == 1
    assert fake.requests[0].headers["authorization"] == "Bearer page-token-late"
    assert sender.problems() == []


def test_a_missing_token_is_no_problem_while_nothing_waits(make_sender: SenderFactory) -> None:
    sender = make_sender(whatsapp_token=None)
    assert sender.send_due() == 0
    assert sender.problems() == []


# The 24-hour customer-service window -------------------------------------------------------------------------


def test_outside_the_window_whatsapp_sends_the_template_instead(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    conversation = add_conversation(db, last_inbound_at=T0 - timedelta(hours=24, seconds=1))
    row_id = add_outbound(db, conversation, "Are you still there?")
    make_sender(template=TEMPLATE).send_due()
    (send,) = fake.requests
    assert send.body["type"] == "template"
    assert send.body["template"] == {"name": "follow_up", "language": {"code": "de_DE"}}
    assert outbound(db, row_id).status == "sent"


@pytest.mark.parametrize(
    ("channel", "last_inbound_at"),
    [("whatsapp", T0 - timedelta(hours=25)), ("whatsapp", None), ("messenger", T0 - timedelta(days=3))],
)
def test_outside_the_window_without_a_template_fails_without_a_request(
    db: sa.Engine,
    fake: FakeGraphAPI,
    make_sender: SenderFactory,
    channel: Channel,
    last_inbound_at: datetime | None,
) -> None:
    row_id = add_outbound(db, add_conversation(db, channel=channel, last_inbound_at=last_inbound_at))
    template = TEMPLATE if channel == "messenger" else None  # Messenger has no templates to fall back on
    make_sender(template=template).send_due()
    row = outbound(db, row_id)
    assert (row.status, row.error_code, row.error) == ("failed", None, OUTSIDE_WINDOW_ERROR)
    assert fake.requests == []


def test_inside_the_window_and_template_rows_are_sent_as_they_are(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    inside = add_outbound(db, add_conversation(db, last_inbound_at=T0 - timedelta(hours=23, minutes=59)), "free")
    template_row = add_outbound(db, add_conversation(db, last_inbound_at=None), TEMPLATE)
    sender = make_sender(template=OutboundMessage(kind="template", template_name="other"))
    sender.send_due()
    assert outbound(db, inside).status == outbound(db, template_row).status == "sent"
    assert sorted(r.body["type"] for r in fake.requests) == ["template", "text"]
    assert [r.body["template"]["name"] for r in fake.requests if r.body["type"] == "template"] == ["follow_up"]


def test_the_window_template_must_be_a_template(make_sender: SenderFactory) -> None:
    with pytest.raises(ConfigError, match="approved WhatsApp template"):
        make_sender(template=OutboundMessage(text="hi"))


# Queries -----------------------------------------------------------------------------------------------------


def test_claim_takes_due_rows_oldest_first_and_filters_channels(db: sa.Engine) -> None:
    wa = [add_outbound(db, add_conversation(db)) for _ in range(3)]
    later = add_outbound(db, add_conversation(db), next_attempt_at=T0 + timedelta(seconds=1))
    ms = add_outbound(db, add_conversation(db, channel="messenger"))

    claimed = claim_outbound(db, now=T0, limit=2, channels=["whatsapp"])
    assert [r.id for r in claimed] == wa[:2]
    assert (claimed[0].attempts, claimed[0].channel, claimed[0].account_id) == (1, "whatsapp", PHONE_ID)
    assert claimed[0].body == OutboundMessage(text="Hello")
    assert claimed[0].last_inbound_at == T0 - timedelta(minutes=5)
    assert {outbound(db, r).status for r in wa[:2]} == {"sending"}
    assert [r.id for r in claim_outbound(db, now=T0, limit=10)] == [wa[2], ms]
    assert claim_outbound(db, now=T0, limit=10) == []
    assert claim_outbound(db, now=T0, limit=10, channels=[]) == []
    assert [r.id for r in claim_outbound(db, now=T0 + timedelta(seconds=1), limit=10)] == [later]


def test_claim_skips_conversations_with_an_earlier_unsent_row(db: sa.Engine) -> None:
    conversation = add_conversation(db)
    first = add_outbound(db, conversation, next_attempt_at=T0 + timedelta(hours=1))
    second = add_outbound(db, conversation)
    assert claim_outbound(db, now=T0, limit=10) == []  # the second is due, but the first is not sent yet
    with db.begin() as connection:
        connection.execute(sa.update(outbound_messages).values(status="failed").where(outbound_messages.c.id == first))
    assert [r.id for r in claim_outbound(db, now=T0, limit=10)] == [second]  # a failed row no longer blocks


def test_release_gives_the_attempt_back(db: sa.Engine) -> None:
    row_id = add_outbound(db, add_conversation(db))
    claim_outbound(db, now=T0, limit=1)
    assert release_outbound(db, row_id, now=T0, error_code=190, error="token")
    row = outbound(db, row_id)
    assert (row.status, row.attempts, row.error_code) == ("pending", 0, 190)
    assert count_pending(db, channels=["whatsapp", "messenger"]) == {"whatsapp": 1, "messenger": 0}


def test_sending_rows_whose_lease_ran_out_are_recovered(db: sa.Engine) -> None:
    conversation = add_conversation(db)
    stuck = add_outbound(db, conversation, "in flight at the crash")
    after = add_outbound(db, conversation, "next")
    lease = timedelta(seconds=20)
    claim_outbound(db, now=T0, limit=10, holder="host:serve/dead/sender", lease=lease)  # a sender claimed it, died

    assert recover_expired_sends(db, now=T0 + timedelta(seconds=19), lease=lease) == 0
    assert claim_outbound(db, now=T0 + timedelta(seconds=19), limit=10) == []  # still blocks its conversation
    later = T0 + timedelta(seconds=21)
    assert recover_expired_sends(db, now=later, lease=lease, keep=[stuck]) == 0  # the caller is still sending it
    assert recover_expired_sends(db, now=later, lease=lease) == 1
    row = outbound(db, stuck)
    assert (row.status, row.next_attempt_at, row.attempts, row.locked_by) == ("pending", later, 1, None)
    assert [r.id for r in claim_outbound(db, now=later, limit=10)] == [stuck]
    assert outbound(db, after).status == "pending"


def test_a_row_claimed_without_a_lease_expires_a_lease_after_its_claim(db: sa.Engine) -> None:
    stuck = add_outbound(db, add_conversation(db))
    claim_outbound(db, now=T0, limit=1)  # as a sender from before migration 0004 left it
    lease = timedelta(seconds=20)
    assert recover_expired_sends(db, now=T0 + timedelta(seconds=19), lease=lease) == 0
    assert recover_expired_sends(db, now=T0 + timedelta(seconds=21), lease=lease) == 1
    assert outbound(db, stuck).status == "pending"


def test_run_recovers_stale_rows_and_sends_until_stopped(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory, clock: Clock
) -> None:
    stuck = add_outbound(db, add_conversation(db))
    claim_outbound(db, now=T0, limit=1)
    with db.begin() as connection:  # claimed ten minutes ago by a sender that died
        connection.execute(sa.update(outbound_messages).values(updated_at=T0 - timedelta(minutes=10)))
    fresh = add_outbound(db, add_conversation(db, channel="messenger"))
    sender = make_sender()
    stop = threading.Event()
    thread = threading.Thread(target=sender.run, args=(stop,), kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        deadline = datetime.now(UTC) + timedelta(seconds=5)
        while len(fake.requests) < 2 and datetime.now(UTC) < deadline:
            threading.Event().wait(0.01)
    finally:
        stop.set()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert outbound(db, stuck).status == outbound(db, fresh).status == "sent"


def test_concurrent_claims_never_take_a_row_twice(database_url: str, db: sa.Engine) -> None:
    users = [add_conversation(db) for _ in range(30)]
    expected = {add_outbound(db, user, f"{user}/{n}"): user for n in range(3) for user in users}
    claimed: list[tuple[int, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def claimer() -> None:
        start.wait()
        idle_since: datetime | None = None
        while True:
            rows = claim_outbound(db, now=T0, limit=4)
            with lock:
                claimed.extend((row.conversation_id, row.id) for row in rows)
                done = len(claimed) >= len(expected)
            for row in rows:
                mark_sent(db, row.id, provider_message_id=f"wamid.{row.id}", now=T0)
            if done:
                return
            if rows:
                idle_since = None
            elif idle_since is None:
                idle_since = datetime.now(UTC)
            elif datetime.now(UTC) - idle_since > timedelta(seconds=5):
                return

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    counts = Counter(row_id for _, row_id in claimed)
    assert set(counts) == set(expected)
    assert max(counts.values()) == 1
    for user in users:  # a conversation's rows were claimed in order, each after the previous was sent
        ids = [row_id for conversation, row_id in claimed if conversation == user]
        assert ids == sorted(ids)


# Status webhooks ---------------------------------------------------------------------------------------------


def test_status_updates_only_move_forward(db: sa.Engine) -> None:
    row_id = add_outbound(db, add_conversation(db), status="sent", provider_message_id="wamid.SENT1", sent_at=T0)
    later = T0 + timedelta(seconds=3)

    with db.begin() as connection:  # the webhook's transaction
        assert apply_status(connection, status_update("delivered"), now=later)
    assert outbound(db, row_id).status == "delivered"
    assert not apply_status(db, status_update("sent"), now=later)
    assert apply_status(db, status_update("read"), now=later)
    assert not apply_status(db, status_update("delivered"), now=later)
    assert not apply_status(db, status_update("played"), now=later)
    row = outbound(db, row_id)
    assert (row.status, row.updated_at) == ("read", later)
    assert not apply_status(db, status_update("read", "wamid.UNKNOWN"), now=later)
    assert not apply_status(db, status_update("read", channel="messenger"), now=later)  # ids are per channel


def test_played_counts_as_read(db: sa.Engine) -> None:
    row_id = add_outbound(db, add_conversation(db), status="delivered", provider_message_id="wamid.SENT1")
    assert apply_status(db, status_update("played"), now=T0)
    assert outbound(db, row_id).status == "read"


@pytest.mark.parametrize("before", ["sent", "delivered", "read"])
def test_failed_after_the_send_was_accepted_always_applies(db: sa.Engine, before: str) -> None:
    row_id = add_outbound(db, add_conversation(db), status=before, provider_message_id="wamid.SENT1", sent_at=T0)
    update = status_update(
        "failed",
        error_code=131047,
        error_title="Re-engagement message",
        error_details="Message failed to send because more than 24 hours have passed",
    )
    assert apply_status(db, update, now=T0)
    row = outbound(db, row_id)
    assert (row.status, row.error_code) == ("failed", 131047)
    assert row.error == "Re-engagement message: Message failed to send because more than 24 hours have passed"
    assert not apply_status(db, status_update("delivered"), now=T0)
    assert outbound(db, row_id).status == "failed"


def test_messenger_read_watermark_marks_earlier_messages_of_the_conversation(db: sa.Engine) -> None:
    conversation = add_conversation(db, channel="messenger", user_id="PSID1")
    other = add_conversation(db, channel="messenger", user_id="PSID2")
    rows = [
        add_outbound(db, conversation, status=s, provider_message_id=f"m_{i}", sent_at=T0 + timedelta(seconds=10 * i))
        for i, s in enumerate(["sent", "delivered", "sent"])
    ]
    other_row = add_outbound(db, other, status="sent", provider_message_id="m_x", sent_at=T0)
    failed = add_outbound(db, conversation, status="failed", sent_at=None)

    update = status_update("read", None, channel="messenger", user_id="PSID1", watermark=T0 + timedelta(seconds=10))
    assert apply_status(db, update, now=T0 + timedelta(minutes=1))
    assert [outbound(db, r).status for r in rows] == ["read", "read", "sent"]
    assert outbound(db, other_row).status == "sent"
    assert outbound(db, failed).status == "failed"


def test_messenger_delivery_per_mid(db: sa.Engine) -> None:
    conversation = add_conversation(db, channel="messenger", user_id="PSID1")
    first = add_outbound(db, conversation, status="sent", provider_message_id="m_1", sent_at=T0)
    second = add_outbound(db, conversation, status="sent", provider_message_id="m_2", sent_at=T0)
    update = status_update("delivered", "m_2", channel="messenger", user_id="PSID1", watermark=T0)
    assert apply_status(db, update, now=T0)
    assert (outbound(db, first).status, outbound(db, second).status) == ("sent", "delivered")


def test_rows_waiting_for_a_disabled_channel_leave_readyz_ready(
    db: sa.Engine, database_url: str, make_sender: SenderFactory
) -> None:
    """Data must not make a process unready: /readyz answers 200 and names the waiting rows as a warning."""
    from chatops.web.app import create_app
    from chatops.web.state import web_state

    add_outbound(db, add_conversation(db, channel="messenger"))
    sender = make_sender(page_token=None, token_source=Tokens())
    assert sender.send_due() == 0
    app = create_app(Settings(database_url=database_url), None, db=db)
    state = web_state(app)
    state.readiness_checks.append(sender.problems)  # wired as `chatops serve` wires its Background
    state.readiness_warnings.append(sender.warnings)
    response = app.test_client().get("/readyz")
    assert (response.status_code, response.json) == (
        200,
        {
            "status": "ready",
            "warnings": ["messenger: 1 outbound message(s) wait: set CHATOPS_MESSENGER_PAGE_TOKEN to send them"],
        },
    )


def test_a_stored_reply_that_cannot_be_read_back_fails_and_the_next_one_is_sent(
    db: sa.Engine, fake: FakeGraphAPI, make_sender: SenderFactory
) -> None:
    conversation = add_conversation(db)
    broken = add_outbound(db, conversation, "first")
    after = add_outbound(db, conversation, "second")
    with db.begin() as connection:  # a button without an id, as a bug or a hand-written row could leave it
        connection.execute(
            sa.update(outbound_messages)
            .where(outbound_messages.c.id == broken)
            .values(body={"text": "first", "buttons": [{"title": "Yes"}]})
        )
    sender = make_sender()

    assert sender.send_due() == 0  # the broken row is taken out of the queue ...
    assert sender.send_due() == 1  # ... so the next claim reaches the row behind it

    row = outbound(db, broken)
    assert row.status == "failed"
    assert row.error == "unreadable stored reply: KeyError: 'id'"
    assert outbound(db, after).status == "sent"
    assert [request.body["text"]["body"] for request in sends(fake)] == ["second"]
