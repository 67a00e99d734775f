"""Heartbeated leases on turns and sends: renewal in one statement per table, expiry, and a restart's recovery."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from chatops.db.inbox import claim_conversation
from chatops.db.leases import recover_incarnation, renew_leases
from chatops.db.outbox import claim_outbound
from chatops.db.tables import conversations
from chatops.engine.leases import LeaseKeeper
from chatops.engine.supervision import Heartbeat
from tests.outbox import T0, add_conversation, add_outbound, outbound

LEASE = timedelta(seconds=20)


def lease_of(db: sa.Engine, conversation_id: int) -> tuple[str | None, object]:
    with db.connect() as connection:
        row = connection.execute(
            sa.select(conversations.c.locked_by, conversations.c.locked_until).where(
                conversations.c.id == conversation_id
            )
        ).one()
    return row.locked_by, row.locked_until


def add_pending_inbound(db: sa.Engine, conversation_id: int) -> None:
    from chatops.db.tables import inbound_messages

    with db.begin() as connection:
        connection.execute(
            inbound_messages.insert().values(
                conversation_id=conversation_id,
                channel="whatsapp",
                provider_message_id=f"wamid.{conversation_id}",
                kind="text",
                text="hi",
                payload={},
                raw={},
                provider_timestamp=T0,
                received_at=T0,
                available_at=T0,
                status="pending",
                attempts=0,
            )
        )


def test_renewal_extends_held_leases_and_leaves_other_holders_alone(db: sa.Engine) -> None:
    mine, theirs = add_conversation(db), add_conversation(db, user_id="15550002222")
    for conversation_id in (mine, theirs):
        add_pending_inbound(db, conversation_id)
    claim_conversation(db, worker_id="h:serve/a/w0", now=T0, lease=LEASE, only=mine)
    claim_conversation(db, worker_id="other/b/w0", now=T0, lease=LEASE, only=theirs)
    row = add_outbound(db, mine)
    claim_outbound(db, now=T0, limit=1, holder="h:serve/a/sender", lease=LEASE)

    until = T0 + timedelta(minutes=5)
    renewed = renew_leases(
        db, turns={mine: "h:serve/a/w0", theirs: "h:serve/a/w1"}, sends={row: "h:serve/a/sender"}, until=until
    )
    assert renewed == (1, 1)
    assert lease_of(db, mine) == ("h:serve/a/w0", until)
    assert lease_of(db, theirs) == ("other/b/w0", T0 + LEASE)  # held by another holder: untouched
    assert outbound(db, row).locked_until == until
    # A renewed lease is not expired, however long the turn has run since its claim.
    later = T0 + timedelta(minutes=4)
    assert claim_conversation(db, worker_id="other/b/w1", now=later, lease=LEASE, only=mine) is None


def test_a_restart_takes_back_its_previous_incarnations_leases_at_once(db: sa.Engine) -> None:
    old, live, foreign = (add_conversation(db, user_id=f"1555000{n}") for n in range(3))
    for conversation_id in (old, live, foreign):
        add_pending_inbound(db, conversation_id)
    claim_conversation(db, worker_id="h:serve/dead/w3", now=T0, lease=LEASE, only=old)
    claim_conversation(db, worker_id="h:serve/new/w0", now=T0, lease=LEASE, only=live)
    claim_conversation(db, worker_id="h:worker/x/w0", now=T0, lease=LEASE, only=foreign)
    left = add_outbound(db, old)
    claim_outbound(db, now=T0, limit=1, holder="h:serve/dead/sender", lease=LEASE)

    recovered = recover_incarnation(db, instance="h:serve", current="h:serve/new/", now=T0 + timedelta(seconds=1))
    assert (recovered.turns, recovered.sends) == (1, 1)
    assert lease_of(db, old) == (None, None)
    assert lease_of(db, live)[0] == "h:serve/new/w0"  # this incarnation's own lease
    assert lease_of(db, foreign)[0] == "h:worker/x/w0"  # another instance's: it may well be alive
    row = outbound(db, left)
    assert (row.status, row.locked_by, row.next_attempt_at) == ("pending", None, T0 + timedelta(seconds=1))
    again = claim_conversation(db, worker_id="h:serve/new/w1", now=T0 + timedelta(seconds=1), lease=LEASE)
    assert again is not None
    assert again.id == old
    assert not again.taken_over


def test_an_expired_lease_is_claimed_as_a_takeover(db: sa.Engine) -> None:
    conversation_id = add_conversation(db)
    add_pending_inbound(db, conversation_id)
    first = claim_conversation(db, worker_id="dead/a/w0", now=T0, lease=LEASE)
    assert first is not None
    assert not first.taken_over
    assert claim_conversation(db, worker_id="live/b/w0", now=T0 + LEASE - timedelta(seconds=1), lease=LEASE) is None
    taken = claim_conversation(db, worker_id="live/b/w0", now=T0 + LEASE + timedelta(seconds=1), lease=LEASE)
    assert taken is not None
    assert taken.taken_over


def test_the_keeper_stops_renewing_the_lease_of_a_stuck_thread(db: sa.Engine) -> None:
    on_time, stuck = add_conversation(db), add_conversation(db, user_id="15550003333")
    for conversation_id in (on_time, stuck):
        add_pending_inbound(db, conversation_id)
    now = [T0]
    keeper = LeaseKeeper(db, instance="h:serve", lease=LEASE, clock=lambda: now[0])
    seconds = [100.0]
    beating, silent = Heartbeat(clock=lambda: seconds[0]), Heartbeat(clock=lambda: seconds[0])
    beating.beat(within=1000)
    silent.beat(within=1)
    for conversation_id, heartbeat, role in ((on_time, beating, "w0"), (stuck, silent, "w1")):
        claim_conversation(db, worker_id=keeper.holder(role), now=T0, lease=LEASE, only=conversation_id)
        keeper.hold_turn(conversation_id, keeper.holder(role), heartbeat)
    seconds[0] += 60  # w1 promised a beat within 1 s (+ grace) and is silent: /readyz says it is stuck
    now[0] = T0 + timedelta(seconds=15)
    assert keeper.renew() == (1, 0)
    assert lease_of(db, on_time)[1] == now[0] + LEASE
    assert lease_of(db, stuck)[1] == T0 + LEASE  # runs out: another worker takes the conversation over


def test_the_keeper_recovers_then_renews_from_its_thread(db: sa.Engine) -> None:
    conversation_id = add_conversation(db)
    add_pending_inbound(db, conversation_id)
    claim_conversation(db, worker_id="h:serve/dead/w0", now=T0, lease=LEASE)
    counted: list[tuple[str, str, int]] = []
    keeper = LeaseKeeper(
        db, instance="h:serve", lease=timedelta(seconds=1), clock=lambda: T0, on_recovered=lambda *a: counted.append(a)
    )
    stop = threading.Event()
    thread = threading.Thread(target=keeper.run, args=(stop,))
    thread.start()
    try:
        for _ in range(200):
            if keeper.recovered_previous:
                break
            threading.Event().wait(0.01)
    finally:
        stop.set()
        thread.join(5)
    assert counted == [("turn", "restart", 1)]
    assert lease_of(db, conversation_id) == (None, None)
