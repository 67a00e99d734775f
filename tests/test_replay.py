"""chatops replay and export: a corpus recorded through the real webhook route and worker (SQLite and
PostgreSQL) against the loopback fake OpenAI and the real SDK, replayed through the CLI."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.config.bot import load_bot
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from tests.replays import Recorded, replay


def snapshot(db: sa.Engine) -> list[list[tuple[Any, ...]]]:
    with db.connect() as connection:
        return [
            [tuple(row) for row in connection.execute(sa.select(table).order_by(table.c.id))]
            for table in (conversations, inbound_messages, turns, outbound_messages)
        ]


def test_unchanged_definition_replays_with_zero_changes_and_reads_only(recorded: Recorded, db: sa.Engine) -> None:
    before = snapshot(db)
    code, report, text = replay(recorded, "--no-cache", "--fail-on-error")
    assert code == 0, text
    summary = report["summary"]
    assert summary["turns"] == 9
    assert summary["unchanged"] == 9, [t for t in report["turns"] if t["outcome"] != "unchanged"]
    assert summary["mean_similarity"] == 1.0
    assert summary["transitions_changed"] == 0
    assert len(recorded.fake.requests) > 0  # the AI was really asked again
    assert snapshot(db) == before  # read-only: nothing changed, nothing queued to send


def test_changed_prompt_shows_the_expected_diffs(recorded: Recorded) -> None:
    (recorded.folder / "templates" / "menu.j2").write_text("You are the cheerful helper of {{ company }}. Be brief.")
    code, report, text = replay(recorded, "--no-cache")
    assert code == 0, text
    changed = [t for t in report["turns"] if t["outcome"] == "changed"]
    assert changed
    assert all(t["stage_before"] == "menu" for t in changed)
    turn = changed[0]
    assert ["-", "assistant"] in turn["diff"] or any(op == "-" and "assistant" in piece for op, piece in turn["diff"])
    assert any(op == "+" and "cheerful" in piece for op, piece in turn["diff"])
    assert 0 < turn["similarity"] < 1
    assert report["summary"]["transitions_changed"] == 0


def test_changed_transition_and_gates(recorded: Recorded) -> None:
    stages = recorded.stages.read_text().replace("keywords: [agent, human]", "keywords: [human]")
    recorded.stages.write_text(stages)
    code, report, text = replay(recorded, "--no-cache", "--max-changed-transitions", "0")
    assert code == 1
    assert report["summary"]["transitions_changed"] == 1
    assert report["summary"]["changed_transitions"][0] == {
        "from": "menu",
        "recorded": "handoff",
        "new": "menu",
        "count": 1,
    }
    assert "gate failed: 1 transitions changed, more than 0" in text
    code, _, _ = replay(recorded, "--max-changed-transitions", "1", "--fail-under-similarity", "0.5")
    assert code == 0


def test_state_changes_show(recorded: Recorded) -> None:
    stages = recorded.stages.read_text().replace(
        "  tracking:\n    reply: tracking.j2\n",
        "  tracking:\n    reply: tracking.j2\n    set: {asked_tracking: true}\n",
    )
    recorded.stages.write_text(stages)
    code, report, text = replay(recorded, "--no-cache")
    assert code == 0, text
    changed = [t for t in report["turns"] if t["state_changed"]]
    assert changed
    assert changed[0]["new"]["state_after"].get("asked_tracking") is True


def test_cache_makes_a_second_run_free_and_chained_mode_follows_the_candidate(recorded: Recorded) -> None:
    cache = ["--cache-dir", str(recorded.folder / "cache")]
    replay(recorded, *cache)
    asked = len(recorded.fake.requests)
    assert asked > 0
    code, report, _ = replay(recorded, *cache)
    assert code == 0
    assert len(recorded.fake.requests) == asked
    assert report["run"]["cache"]["misses"] == 0
    assert report["run"]["cache"]["hits"] > 0

    (recorded.folder / "templates" / "welcome.j2").write_text("Welcome, {{ user.name }}!")
    stages = recorded.stages.read_text().replace("    next: menu\n  menu:", "    next: refund\n  menu:", 1)
    recorded.stages.write_text(stages)
    code, report, text = replay(recorded, "--mode", "chained", *cache)
    assert code == 0, text
    by_key = {t["key"]: t for t in report["turns"]}
    first_conversation = [
        t for t in report["turns"] if t["index"] <= 1 and t["user_text"] in ("hello", "where is TS-123")
    ]
    # Chained: the welcome now leads to `refund`, so the second turn starts there (independent would start in menu).
    assert by_key
    assert first_conversation[0]["new"]["stage_after"] == "refund"
    assert first_conversation[1]["new"]["replies"] != first_conversation[1]["reference"]["replies"]


def test_export_then_replay_from_corpus_equals_replay_from_database(recorded: Recorded) -> None:
    corpus = recorded.folder / "corpus.jsonl"
    result = CliRunner().invoke(app, ["export", "--out", str(corpus)], env=recorded.env)
    assert result.exit_code == 0, result.output
    lines = corpus.read_text().splitlines()
    assert len(lines) == 3
    assert json.loads(lines[0])["version"] == 1
    (recorded.folder / "templates" / "menu.j2").write_text("You are a terse bot of {{ company }}.")
    cache = ["--cache-dir", str(recorded.folder / "cache")]
    _, from_db, _ = replay(recorded, *cache)
    _, from_file, _ = replay(recorded, "--from", str(corpus), *cache)

    def comparable(report: dict[str, Any]) -> list[dict[str, Any]]:
        return [{k: v for k, v in turn.items() if k != "duration_ms"} for turn in report["turns"]]  # wall time

    assert comparable(from_db) == comparable(from_file)
    assert from_db["summary"]["changed"] > 0


def test_baselines_answer_what_my_last_edit_changed(recorded: Recorded) -> None:
    base = ["--baseline-dir", str(recorded.folder / "baselines"), "--no-cache"]
    (recorded.folder / "templates" / "menu.j2").write_text("You are a terse bot of {{ company }}.")
    _, first, _ = replay(recorded, *base, "--save-baseline", "v1")
    assert first["summary"]["changed"] > 0
    code, again, text = replay(recorded, *base, "--against", "v1")
    assert code == 0, text
    assert again["run"]["against"] == "baseline:v1"
    assert again["summary"]["changed"] == 0
    code, _, text = replay(recorded, *base, "--against", "nope")
    assert code == 1
    assert "no baseline 'nope'" in text


def test_judge_grades_changed_turns_as_strict_json_and_github_format(recorded: Recorded) -> None:
    (recorded.folder / "templates" / "menu.j2").write_text("You are a terse bot of {{ company }}.")
    cache = ["--cache-dir", str(recorded.folder / "cache")]
    code, report, text = replay(recorded, "--judge", "Answer politely; never say fail", *cache, "--format", "github")
    assert code == 0, text
    judged = [t for t in report["turns"] if t["judge"]]
    assert judged
    assert len(judged) == report["summary"]["changed"]
    assert {t["judge"]["passed"] for t in judged} <= {True, False}
    judge_requests = [r for r in recorded.fake.requests if "grade" in json.dumps(r.body)]
    assert judge_requests[0].body["response_format"]["json_schema"]["strict"] is True
    assert "::warning title=chatops replay::turn " in text
    assert "### chatops replay" in text
    asked = len(recorded.fake.requests)
    code, again, _ = replay(
        recorded, "--judge", "Answer politely; never say fail", *cache, "--max-judged-failures", "99"
    )
    assert code == 0
    assert len(recorded.fake.requests) == asked  # verdicts come from the cache too
    assert [t["judge"] for t in again["turns"]] == [t["judge"] for t in report["turns"]]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_a_stopped_run_still_reports_what_finished(recorded: Recorded, db: sa.Engine) -> None:
    from chatops.ai.openai_client import OpenAIClient
    from chatops.replay.corpus import read_database
    from chatops.replay.gates import Gates
    from chatops.replay.session import ReplayOptions, run_replay

    stop = threading.Event()
    with OpenAIClient("sk-test", recorded.fake.base_url) as ai:
        report = run_replay(
            read_database(db),
            load_bot(recorded.stages),
            ai,
            ReplayOptions(mode="chained", concurrency=1, gates=Gates(fail_on_error=True)),
            on_turn=lambda turn: stop.set(),  # what Ctrl-C does in the CLI
            stop=stop,
        )
    assert report["run"]["interrupted"] is True
    assert 0 < report["summary"]["turns"] < report["run"]["total_turns"]
    assert report["gates"]["failed"] == ["the run was interrupted before every turn was replayed"]
