"""Process-level fault tests of ``chatops serve``: a real server process, a real database, loopback fakes.

Each test spawns ``python -m chatops serve --port 0`` (the port is read from its banner) in its own directory
with a copy of the example bot, talks to it over HTTP like Meta does (signed bodies, retries until a 200),
and watches the loopback fake Graph API and fake OpenAI servers plus the database rows. What they prove is the
list in DESIGN.md section 2 (docs/operations.md explains it for operators):

- a signed POST is acknowledged and the reply reaches the Graph API with the right path, token and body;
- a message delivered 50 times at once is stored and answered once;
- one conversation's turns never overlap and follow arrival order, while conversations run in parallel;
- after SIGKILL and a restart, every acknowledged message is answered; duplicates only for sends in flight;
- with the database gone the webhook answers 503; once it is back nothing acknowledged is lost.

Every process is killed in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from tests.processes import (
    OPENAI_KEY,
    SENDER_CONCURRENCY,
    WORKERS,
    Fakes,
    Meta,
    ServeProcess,
    conversation_turns,
    held_leases,
    inbound,
    message,
    outbound,
    overlap,
    post,
    reads,
    reply_counts,
    sending_rows,
    sends,
    sent_text,
    unanswered,
    wait_for,
)
from tests.tcp_proxy import TCPProxy
from tests.webhook import ACCESS_TOKEN, PHONE_NUMBER_ID, VERIFY_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


# 1. End to end -----------------------------------------------------------------------------------------------


def test_signed_post_is_answered_through_the_graph_api(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    server = serve(database_url)
    wa_id = "15550100001"
    with httpx.Client(timeout=10) as client:
        challenge = client.get(
            f"{server.url}/webhooks/whatsapp",
            params={"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "1158201444"},
        )
        assert (challenge.status_code, challenge.text) == (200, "1158201444")

        hello = message("hello", wa_id=wa_id, message_id="wamid.E2E-HELLO")
        unsigned = post(client, server.url, hello, signed=False)
        assert unsigned.status_code == 401
        assert unsigned.json()["error"]["code"] == "webhook_rejected"

        response = post(client, server.url, hello)
        assert response.status_code == 200, response.text
        assert response.json() == {"stored": 1, "duplicates": 0, "statuses": 0}
        wait_for(lambda: "wamid.E2E-HELLO" in reads(fakes.graph), timeout=15, what="the welcome", server=server)

        question = "can I pay with a kitchen voucher?"
        response = post(client, server.url, message(question, wa_id=wa_id, message_id="wamid.E2E-QUESTION"))
        assert response.status_code == 200, response.text
        wait_for(lambda: "wamid.E2E-QUESTION" in reads(fakes.graph), timeout=15, what="the answer", server=server)

    welcome, answer = sends(fakes.graph, wa_id)
    for request in (welcome, answer):
        assert request.method == "POST"
        assert request.path == f"/{PHONE_NUMBER_ID}/messages"
        assert request.headers["authorization"] == f"Bearer {ACCESS_TOKEN}"
        assert request.headers["content-type"].startswith("application/json")
        assert request.body["messaging_product"] == "whatsapp"
        assert request.body["to"] == wa_id
    assert welcome.body["type"] == "interactive"
    assert "Hi Ada! Welcome to Northwind support." in sent_text(welcome)
    assert [b["reply"]["title"] for b in welcome.body["interactive"]["action"]["buttons"]] == [
        "Track my order",
        "Opening hours",
        "Talk to a person",
    ]
    assert answer.body["type"] == "text"
    assert answer.body["text"]["body"] == f"echo: {question}"  # what the fake model answered, sent unchanged

    marks = [r for r in fakes.graph.requests if (r.body or {}).get("status") == "read"]
    assert [r.body for r in marks] == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.E2E-HELLO"},
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.E2E-QUESTION"},
    ]
    assert all(r.path == f"/{PHONE_NUMBER_ID}/messages" for r in marks)
    assert all(r.headers["authorization"] == f"Bearer {ACCESS_TOKEN}" for r in marks)

    ai_calls = fakes.openai.requests
    assert ai_calls, "the question went to the model"
    assert all(r.headers["authorization"] == f"Bearer {OPENAI_KEY}" for r in ai_calls)
    assert ai_calls[-1].messages[-1] == {"role": "user", "content": question}
    assert [row.status for row in outbound(db)] == ["sent", "sent"]


# 2. Duplicates -----------------------------------------------------------------------------------------------


def test_one_message_delivered_fifty_times_at_once_is_answered_once(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    server = serve(database_url)
    wa_id = "15550200002"
    body = message("hello", wa_id=wa_id, message_id="wamid.DUPLICATE")
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(max_workers=25) as pool:
        responses = list(pool.map(lambda _: post(client, server.url, body), range(50)))

    assert [r.status_code for r in responses] == [200] * 50
    assert sum(r.json()["stored"] for r in responses) == 1
    assert sum(r.json()["duplicates"] for r in responses) == 49
    wait_for(lambda: reads(fakes.graph), timeout=15, what="the reply", server=server)
    time.sleep(1.0)  # room for a second reply, were there one: workers poll every 0.2 s, the sender every 0.05 s

    assert [row.status for row in inbound(db, wa_id=wa_id)] == ["done"]
    assert len(conversation_turns(db, wa_id=wa_id)) == 1
    assert [row.status for row in outbound(db)] == ["sent"]
    assert len(sends(fakes.graph, wa_id)) == 1
    assert reads(fakes.graph) == ["wamid.DUPLICATE"]


# 3. Order within a conversation, parallelism across conversations --------------------------------------------


def test_one_conversation_turns_never_overlap_and_follow_arrival_order(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    fakes.openai.latency = 0.03  # a turn that takes time, so overlapping turns would show
    server = serve(database_url)
    wa_id = "15550300003"
    bodies = [message(f"note {i} about kitchenware", wa_id=wa_id, message_id=f"wamid.ORDER-{i:02d}") for i in range(20)]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(lambda b: post(client, server.url, b), bodies))
    assert [r.status_code for r in responses] == [200] * 20

    ids = {f"wamid.ORDER-{i:02d}" for i in range(20)}
    wait_for(lambda: not unanswered(db, ids), timeout=40, what="20 answers", server=server)

    arrived = inbound(db, wa_id=wa_id)
    history = conversation_turns(db, wa_id=wa_id)
    assert len(arrived) == len(history) == 20
    # Turn i answers inbound i, in inbound id (arrival) order; none starts before the previous one finished.
    assert [t.inbound_ids for t in history] == [[row.id] for row in arrived]
    for earlier, later in itertools.pairwise(history):
        assert earlier.started_at <= earlier.finished_at <= later.started_at, (earlier, later)
    # The replies reached the user in the same order: the welcome first, then one echo per message.
    texts = [sent_text(r) for r in sends(fakes.graph, wa_id)]
    assert len(texts) == 20
    assert "Welcome to Northwind support" in texts[0]
    assert texts[1:] == [f"echo: {row.text}" for row in arrived[1:]]


def test_conversations_are_answered_in_parallel(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    server = serve(database_url)
    users = [f"155504{i:05d}" for i in range(20)]
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(max_workers=20) as pool:

        def deliver_all(kind: str, text: str) -> set[str]:
            ids = {f"wamid.{kind}-{u}" for u in users}
            bodies = [message(text, wa_id=u, message_id=f"wamid.{kind}-{u}") for u in users]
            assert [r.status_code for r in pool.map(lambda b: post(client, server.url, b), bodies)] == [200] * 20
            return ids

        # Each conversation's first message gets the welcome (no AI); the second goes to the model.
        greeted = deliver_all("HELLO", "hello")
        wait_for(lambda: not unanswered(db, greeted), timeout=30, what="20 welcomes", server=server)

        latency = 0.2
        fakes.openai.latency = latency
        calls_before = len(fakes.openai.requests)
        started = time.monotonic()
        asked = deliver_all("QUESTION", "do you ship kettles abroad?")
        wait_for(lambda: len(sends(fakes.graph)) >= 40, timeout=40, what="20 answers", server=server)
        elapsed = time.monotonic() - started
    # The sender records a send just after the Graph API accepted it.
    wait_for(lambda: not unanswered(db, asked), timeout=10, what="20 answers recorded", server=server)

    calls_per_turn = (len(fakes.openai.requests) - calls_before) / len(users)
    serial = len(users) * calls_per_turn * latency  # one worker, one conversation after another
    question_turns = [conversation_turns(db, wa_id=u)[-1] for u in users]
    most_at_once = overlap([(t.started_at, t.finished_at) for t in question_turns])
    print(
        f"\n20 conversations, {calls_per_turn:g} model calls of {latency:g}s per turn: {elapsed:.2f}s "
        f"(serial {serial:.2f}s); at most {most_at_once} turns at once with {WORKERS} workers"
    )
    assert calls_per_turn >= 1
    assert elapsed < 0.6 * serial
    assert most_at_once >= 2


# 4. SIGKILL and restart --------------------------------------------------------------------------------------


def test_sigkill_mid_run_and_restart_answers_every_acknowledged_message(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    fakes.openai.latency = 0.25  # turns are in flight at the kill
    fakes.graph.latency = 0.1  # and so are sends
    lease = {"CHATOPS_LEASE_SECONDS": "2"}  # whatever the restart does not take back is free again after 2 s
    first = serve(database_url, **lease)
    users = [f"155505{i:05d}" for i in range(8)]
    texts = ["hello"] + [f"question {k} on pans" for k in range(1, 4)]
    plan = [
        (f"wamid.KILL-{u}-{k}", message(f"{text} from {u}", wa_id=u, message_id=f"wamid.KILL-{u}-{k}"))
        for k, text in enumerate(texts)
        for u in users
    ]
    with httpx.Client(timeout=10) as client:
        meta = Meta(client)
        meta.url = first.url

        def flow() -> None:  # messages keep arriving while the server is killed and restarted
            for provider_id, body in plan:
                meta.deliver(provider_id, body)
                time.sleep(0.06)

        feeder = threading.Thread(target=flow, name="meta", daemon=True)
        feeder.start()
        try:
            # The 8 welcomes (no AI) and a couple of answers are out: the model is answering questions now.
            wait_for(lambda: len(sends(fakes.graph)) >= 10, timeout=20, what="the first answers", server=first)
            first.kill()
            acknowledged_before_kill = len(meta.acknowledged)
            leases_left = held_leases(db)  # turns the kill interrupted: the restart takes them back at once
            stuck = sending_rows(db)  # sends the kill interrupted: sent again after the restart
            second = serve(database_url, **lease)
            meta.url = second.url
        finally:
            feeder.join(timeout=30)
        meta.retry_failed(deadline=time.monotonic() + 20)

    every = {provider_id for provider_id, _ in plan}
    assert meta.acknowledged == every, "every message is acknowledged once Meta has retried the refused ones"
    wait_for(lambda: not unanswered(db, every), timeout=40, what="every acknowledged message answered", server=second)

    counts = reply_counts(db, fakes.graph)
    never_received = [row_id for row_id, n in counts.items() if n == 0]
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    print(
        f"\nSIGKILL: {acknowledged_before_kill} messages acknowledged before the kill, {meta.refused} refused and "
        f"delivered again, {leases_left} conversation leases and {stuck} outbound rows left by the dead process, "
        f"{duplicates} duplicate replies "
        f"({len(counts)} replies in all)"
    )
    assert leases_left >= 1, "the kill interrupted turns, whose leases the restarted process took back"
    assert never_received == []
    assert duplicates <= min(stuck, SENDER_CONCURRENCY)
    assert [row.status for row in inbound(db)] == ["done"] * len(plan)  # one row per message, however often sent


# 5. Database outage ------------------------------------------------------------------------------------------


# PostgreSQL only. A TCP proxy between chatops and the server takes the database away the way an outage does:
# open connections break, new ones are refused. SQLite has no faithful equivalent: it is a file in the same
# process; permissions do not bind the root user this runs as; another process holding the write lock is not an
# outage and only turns into 503 after the 30-second busy timeout; a full disk or I/O errors need a mount.
@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_database_outage_answers_503_and_loses_nothing(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    direct = make_url(database_url)
    with TCPProxy(direct.host or "127.0.0.1", direct.port or 5432) as proxy:
        proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = serve(proxied, CHATOPS_LEASE_SECONDS="2")
        users = [f"155506{i:05d}" for i in range(6)]
        with httpx.Client(timeout=10) as client:
            meta = Meta(client)
            meta.url = server.url

            for u in users:  # conversations past their welcome, every reply sent: nothing is in the outbox
                meta.deliver(f"wamid.OUT-{u}-0", message("hello", wa_id=u, message_id=f"wamid.OUT-{u}-0"))
            wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=20, what="welcomes", server=server)

            fakes.openai.latency = 0.6  # each worker is in a model call when the database goes
            calls_before = len(fakes.openai.requests)
            for u in users:
                meta.deliver(f"wamid.OUT-{u}-1", message(f"spoons {u}?", wa_id=u, message_id=f"wamid.OUT-{u}-1"))
            assert len(meta.acknowledged) == 2 * len(users)
            wait_for(lambda: len(fakes.openai.requests) >= calls_before + WORKERS, timeout=10, what="busy workers")

            proxy.stop()
            down = post(client, server.url, message("forks?", wa_id=users[0], message_id="wamid.OUT-down"))
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "database_unavailable"
            ready = client.get(f"{server.url}/readyz")
            assert ready.status_code == 503
            assert ready.json()["status"] == "unavailable"
            assert "cannot use the database" in ready.json()["reasons"][0]
            time.sleep(1.5)  # the turns in flight finish their model calls and fail to commit
            assert client.get(f"{server.url}/webhooks/whatsapp").status_code == 403  # no database needed
            still_down = post(client, server.url, message("knives?", wa_id=users[1], message_id="wamid.OUT-down2"))
            assert still_down.status_code == 503

            proxy.start()
            wait_for(lambda: client.get(f"{server.url}/readyz").status_code == 200, timeout=10, what="readyz")
            meta.deliver("wamid.OUT-down", message("forks?", wa_id=users[0], message_id="wamid.OUT-down"))
            meta.deliver("wamid.OUT-down2", message("knives?", wa_id=users[1], message_id="wamid.OUT-down2"))
            assert not meta.failed, "the database is back: every delivery is acknowledged"
            wait_for(lambda: not unanswered(db, meta.acknowledged), timeout=30, what="every answer", server=server)

    counts = reply_counts(db, fakes.graph)
    assert len(counts) == len(meta.acknowledged) == 2 * len(users) + 2
    # No send was in flight when the database went away, so nothing may be sent twice.
    assert sorted(set(counts.values())) == [1]
    assert [row.status for row in inbound(db)] == ["done"] * len(counts)
