"""``chatops test --ai openai``: the model behind replay's answer cache, ``judge:`` graded by replay's judge.

The real OpenAI SDK talks to the loopback fake (tests/fakes/openai_server.py); the pizza bot runs from the test's
directory (the cwd), so the cache lands in ./.chatops/ai-cache as it would in a repository.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from chatops.cli.app import app
from tests.conftest import ROOT
from tests.fakes.openai_server import FakeOpenAI, JSONReply, Scripted, default_response

GREETING = 'Ciao! This is Pizza Pronto. Write how many and which pizza, e.g. "2 Diavola".'
CASES = """
- name: greeted
  start: 2026-03-02T19:00
  steps:
    - user: ciao
      expect:
        judge: The bot greets the customer.
        similar_to: {text: "Ciao, this is Pizza Pronto: write how many and which pizza", threshold: 0.6}
- name: hungry
  start: 2026-03-02T19:00
  steps:
    - user: ciao
    - user: I am hungry
      expect:
        stage: confirm
        ai_called: true
        judge: The bot says when the pizza will arrive.
"""


def grading(body: dict[str, Any]) -> Scripted:
    """The judge passes a rubric about greeting and fails any other; other requests get the default answers."""
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    if "You grade a chatbot's answer" not in system:
        return default_response(body)
    if "greets the customer" in system:
        return JSONReply({"verdict": "pass", "reason": "it says ciao"})
    return JSONReply({"verdict": "fail", "reason": "it never says when the pizza arrives"})


@pytest.fixture(autouse=True)
def pizza_bot(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "examples" / "pizza" / "stages.yaml", tmp_path / "stages.yaml")
    shutil.copytree(ROOT / "examples" / "pizza" / "templates", tmp_path / "templates")
    Path("cases.yaml").write_text(textwrap.dedent(CASES).lstrip(), encoding="utf-8")
    return tmp_path


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(responder=grading) as server:
        yield server


def run(fake: FakeOpenAI, *args: str) -> Result:
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake.base_url}
    return CliRunner().invoke(app, ["test", "cases.yaml", "--ai", "openai", "-j", "2", *args], env=env)


def judge_requests(fake: FakeOpenAI) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if "You grade a chatbot's answer" in r.messages[0]["content"]]


def test_judge_passes_and_fails_with_the_models_reason(fake: FakeOpenAI) -> None:
    result = run(fake)
    assert result.exit_code == 1
    assert "PASS cases.yaml::greeted  " in result.stdout
    failures = [line for line in result.stdout.splitlines() if line.startswith("cases.yaml:")]
    assert len(failures) == 1
    assert failures[0].startswith(
        "cases.yaml:16:9: step 2 (user: I am hungry): judge: it never says when the pizza arrives; replies ['Sorry"
    )


def test_the_judge_asks_for_strict_json_with_the_rubric_and_what_was_said(fake: FakeOpenAI) -> None:
    run(fake)
    judged = judge_requests(fake)
    assert len(judged) == 2  # one per judge: similar_to asks no model
    assert {body["response_format"]["json_schema"]["strict"] for body in judged} == {True}
    greeted = next(body for body in judged if "greets the customer" in body["messages"][0]["content"])
    assert greeted["messages"][-1]["content"] == f"User's message:\nciao\n\nNew answer:\n{GREETING}"


def test_a_second_run_asks_the_model_nothing(fake: FakeOpenAI) -> None:
    first = run(fake)
    asked = len(fake.requests)
    second = run(fake)
    assert asked == 3  # the form's extraction and two judges
    assert len(fake.requests) == asked
    assert first.stdout.splitlines()[-1].endswith(f"; AI cache: 0 hits, 3 misses ({Path('.chatops/ai-cache')})")
    assert second.stdout.splitlines()[-1].endswith(f"; AI cache: 3 hits, 0 misses ({Path('.chatops/ai-cache')})")
    assert second.exit_code == first.exit_code == 1
    assert len(list(Path(".chatops/ai-cache").glob("*/*.json"))) == 3
    for entry in Path(".chatops/ai-cache").glob("*/*.json"):
        assert json.loads(entry.read_text())


def test_no_cache_asks_the_model_every_time(fake: FakeOpenAI) -> None:
    run(fake, "--no-cache")
    result = run(fake, "--no-cache")
    assert len(fake.requests) == 6
    assert "AI cache" not in result.stdout
    assert not Path(".chatops/ai-cache").exists()


def test_an_unreachable_judge_fails_its_expectation_and_the_run_goes_on(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    result = CliRunner().invoke(app, ["test", "cases.yaml", "--ai", "openai", "-k", "greeted"], env=env)
    assert result.exit_code == 1
    assert "cases.yaml:6:9: step 1 (user: ciao): judge: the judge could not grade: " in result.stdout
    assert result.stdout.splitlines()[-1].startswith("0 passed, 1 failed (1 steps) in ")
