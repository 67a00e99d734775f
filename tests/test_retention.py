"""`chatops prune` (retention) and `chatops forget` (erasure) through the real CLI, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.db.tables import audit_log, conversations, inbound_messages, outbound_messages, turns

runner = CliRunner()
NOW = datetime.now(UTC)


def chatops(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def add_history(db: sa.Engine, user_id: str, *, days_ago: float, channel: str = "whatsapp", n: int = 3) -> int:
    """A conversation whose ``n`` messages, turns and replies all happened ``days_ago`` days ago."""
    at = NOW - timedelta(days=days_ago)
    with db.begin() as connection:
        conversation_id = connection.execute(
            conversations.insert()
            .values(
                channel=channel,
                account_id="PHONE",
                user_id=user_id,
                state={"size": "large"},
                mode="bot",
                turn_count=n,
                last_inbound_at=at,
                created_at=at,
                updated_at=at,
            )
            .returning(conversations.c.id)
        ).scalar_one()
        for i in range(n):
            turn_id = connection.execute(
                turns.insert()
                .values(
                    conversation_id=conversation_id,
                    started_at=at,
                    finished_at=at,
                    user_text=f"hello {i}",
                    variables={"user": {"id": user_id}},
                    prompt=[{"role": "user", "content": f"hello {i}"}],
                    ai_response="hi",
                    template_versions={},
                    replies=[{"text": "hi"}],
                )
                .returning(turns.c.id)
            ).scalar_one()
            connection.execute(
                inbound_messages.insert().values(
                    conversation_id=conversation_id,
                    channel=channel,
                    provider_message_id=f"{user_id}.{channel}.{days_ago}.{i}",
                    kind="text",
                    text=f"hello {i}",
                    payload={},
                    raw={"from": user_id, "text": {"body": f"hello {i}"}},
                    provider_timestamp=at,
                    received_at=at,
                    available_at=at,
                    status="done",
                    attempts=1,
                    turn_id=turn_id,
                )
            )
            connection.execute(
                outbound_messages.insert().values(
                    conversation_id=conversation_id,
                    turn_id=turn_id,
                    body={"kind": "text", "text": "hi"},
                    status="read",
                    attempts=1,
                    next_attempt_at=None,
                    created_at=at,
                    updated_at=at,
                    sent_at=at,
                )
            )
    return conversation_id


def rows(db: sa.Engine, table: sa.Table, *columns: str) -> list[tuple[Any, ...]]:
    with db.connect() as connection:
        query = sa.select(*(table.c[name] for name in columns)).order_by(table.c.id)
        return [tuple(row) for row in connection.execute(query)]


def test_prune_clears_old_raw_payloads_and_traces_and_keeps_recent_ones(database_url: str, db: sa.Engine) -> None:
    add_history(db, "old", days_ago=100)
    add_history(db, "month", days_ago=40)
    add_history(db, "new", days_ago=1)

    code, out, err = chatops("--database-url", database_url, "prune", "--dry-run", "--json", "--batch-size", "2")
    assert (code, err) == (0, "")
    assert json.loads(out)["counts"] == {"traces_cleared": 3, "raw_cleared": 6}
    assert all(raw for (raw,) in rows(db, inbound_messages, "raw"))  # a dry run changes nothing

    code, out, _ = chatops("--database-url", database_url, "prune", "--batch-size", "2")
    assert code == 0
    assert "        3  turn traces cleared" in out
    assert "        6  raw payloads cleared" in out
    raws = [raw for (raw,) in rows(db, inbound_messages, "raw")]
    assert raws[:6] == [{}] * 6
    assert all(raws[6:])
    traces = rows(db, turns, "variables", "prompt", "ai_response", "user_text")
    assert traces[0] == ({}, None, None, "hello 0")  # the message text stays: that is message retention
    assert all(prompt is not None for _, prompt, _, _ in traces[3:])

    code, out, _ = chatops("--database-url", database_url, "prune", "--json")
    assert json.loads(out)["counts"] == {"traces_cleared": 0, "raw_cleared": 0}  # done once, not again


def test_prune_deletes_old_messages_but_never_queued_work(
    database_url: str, db: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHATOPS_RETAIN_MESSAGES_DAYS", "30")
    monkeypatch.setenv("CHATOPS_RETAIN_RAW_DAYS", "never")
    old = add_history(db, "old", days_ago=100)
    waiting = add_history(db, "waiting", days_ago=100, n=1)
    with db.begin() as connection:  # an old reply still waiting for its channel's token
        connection.execute(
            outbound_messages.update()
            .where(outbound_messages.c.conversation_id == waiting)
            .values(status="pending", next_attempt_at=NOW)
        )
    recent = add_history(db, "new", days_ago=1)

    code, out, _ = chatops("--database-url", database_url, "prune", "--json")
    assert code == 0
    counts = json.loads(out)["counts"]
    assert counts == {
        "outbound_deleted": 3,
        "inbound_deleted": 4,
        "turns_deleted": 4,
        "conversations_deleted": 1,
        "traces_cleared": 0,
    }
    assert {c for (c,) in rows(db, conversations, "id")} == {waiting, recent}
    assert old not in {c for (c,) in rows(db, inbound_messages, "conversation_id")}
    assert rows(db, outbound_messages, "conversation_id", "status", "turn_id")[0] == (waiting, "pending", None)


def test_forget_deletes_one_persons_data_and_reports_it(database_url: str, db: sa.Engine) -> None:
    gone = add_history(db, "4915112345678", days_ago=2)
    add_history(db, "4915112345678", days_ago=2, channel="messenger", n=1)
    kept = add_history(db, "4917000000000", days_ago=2)
    with db.begin() as connection:
        connection.execute(
            audit_log.insert(),
            [
                {"actor": "ops", "action": "conversation.pause", "target": f"conversation:{gone}", "at": NOW},
                {"actor": "ops", "action": "conversation.pause", "target": f"conversation:{kept}", "at": NOW},
            ],
        )

    code, _, err = chatops("--database-url", database_url, "forget", "--user", "4915112345678")
    assert code == 1  # not a terminal and no --yes: nothing is deleted
    assert "Hint: pass --yes to confirm" in err
    assert len(rows(db, conversations, "id")) == 3

    code, out, err = chatops(
        "--database-url", database_url, "forget", "--user", "4915112345678", "--channel", "whatsapp", "--yes"
    )
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "Removed for 4915112345678 on whatsapp:",
        "        1  conversations",
        "        3  inbound messages",
        "        3  outbound messages",
        "        3  turns",
        "        1  audit entries anonymised",
    ]
    assert [user for (user,) in rows(db, conversations, "user_id")] == ["4915112345678", "4917000000000"]
    assert rows(db, audit_log, "target") == [("forgotten",), (f"conversation:{kept}",)]

    code, out, _ = chatops("--database-url", database_url, "forget", "--user", "4915112345678", "--yes", "--json")
    report = json.loads(out)
    assert report["counts"]["conversations"] == 1
    assert report["counts"]["inbound_messages"] == 1
    assert report["conversations"][0]["channel"] == "messenger"
    assert rows(db, turns, "conversation_id") == [(kept,)] * 3


def test_prune_pauses_after_each_batch_that_changed_rows(db: sa.Engine) -> None:
    from chatops.cli import prune as prune_cli
    from chatops.db import retention

    add_history(db, "old", days_ago=100)  # messages 1-3: raw payloads past the horizon
    add_history(db, "new", days_ago=1)  # messages 4-6
    policy = retention.RetentionPolicy(raw_days=30)
    pauses: list[float] = []
    report = retention.prune(db, policy, now=NOW, batch_size=2, dry_run=True, pause_ratio=3.0, sleep=pauses.append)
    assert (report.counts, pauses) == ({"raw_cleared": 3}, [])  # a dry run changes nothing: nothing to pause for
    report = retention.prune(db, policy, now=NOW, batch_size=2, pause_ratio=3.0, sleep=pauses.append)
    # Batch [1, 2] cleared two rows, [3, 4] one and reached the horizon; each pause is 3 × its batch's time.
    assert report.counts == {"raw_cleared": 3}
    assert len(pauses) == 2
    assert all(pause > 0 for pause in pauses)
    report = retention.prune(db, policy, now=NOW, batch_size=2, pause_ratio=0.0, sleep=pauses.append)
    assert (report.counts, len(pauses)) == ({"raw_cleared": 0}, 2)  # nothing left to change, no pause
    # `chatops prune` keeps its own copies of the defaults (it must not import SQLAlchemy for --help).
    assert (prune_cli.DEFAULT_BATCH_SIZE, prune_cli.DEFAULT_PAUSE_RATIO) == (
        retention.DEFAULT_BATCH_SIZE,
        retention.DEFAULT_PAUSE_RATIO,
    )
