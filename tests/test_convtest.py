"""``chatops test``: conversation tests through the real route and worker, as a user runs them from the CLI."""

from __future__ import annotations

import json
import shutil
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chatops.cli.app import app
from tests.conftest import ROOT

PIZZA = ROOT / "examples" / "pizza"
GREETING = 'Ciao! This is Pizza Pronto. Write how many and which pizza, e.g. "2 Diavola".'


@pytest.fixture(autouse=True)
def pizza_bot(tmp_path: Path) -> Path:
    """A copy of the pizza bot in the test's directory (the cwd), so reported paths are short."""
    shutil.copy(PIZZA / "stages.yaml", tmp_path / "stages.yaml")
    shutil.copytree(PIZZA / "templates", tmp_path / "templates")
    return tmp_path


def run(*args: str) -> Result:
    return CliRunner().invoke(app, ["test", *args])


def write(name: str, text: str) -> Path:
    path = Path(name)
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


@pytest.mark.parametrize("stages", [ROOT / "stages.yaml", PIZZA / "stages.yaml"], ids=["northwind", "pizza"])
def test_the_example_bots_pass_their_conversation_tests(stages: Path) -> None:
    result = CliRunner().invoke(app, ["--stages", str(stages), "test"])
    assert result.exit_code == 0, result.stdout + result.stderr
    assert " 0 failed" in result.stdout


def test_every_expectation_kind_passes() -> None:
    write(
        "pass.yaml",
        """
        - name: everything holds
          start: 2026-03-02T19:00
          steps:
            - user: ciao
              expect:
                stage: menu
                state: {}
                reply: 'Ciao! This is Pizza Pronto. Write how many and which pizza, e.g. "2 Diavola".'
                reply_contains: [Pizza Pronto, Diavola]
                reply_not_contains: Sorry
                reply_regex: '^Ciao!'
                reply_count: 1
                buttons: []
                max_length: 100
                handoff: false
                error: false
                window_template: false
                ai_called: false
                similar_to: {text: "Ciao, this is Pizza Pronto: write how many and which pizza", threshold: 0.6}
            - user: 2 diavola
              expect: {stage: confirm, state_contains: {qty: 2, pizza: Diavola, lat: null}, buttons: ["yes", "no"]}
        """,
    )
    result = run("pass.yaml")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[0].startswith("PASS pass.yaml::everything holds  ")
    assert result.stdout.splitlines()[-1].startswith("1 passed, 0 failed (2 steps) in ")


def test_state_is_what_templates_see_without_a_forms_progress() -> None:
    write(
        "form.yaml",
        """
        - name: a form still asking
          steps:
            - user: ciao
            - user: 3 pizza please
              expect: {stage: confirm, state: {qty: 3}, reply: Which pizza would you like?}
        """,
    )
    result = run("form.yaml")
    assert result.exit_code == 0, result.stdout


def test_every_expectation_kind_fails_with_what_happened() -> None:
    write(
        "fail.yaml",
        """
        - name: everything wrong
          start: 2026-03-02T19:00
          steps:
            - user: ciao
              expect:
                stage: confirm
                state: {qty: 1}
                state_contains: {pizza: Funghi}
                reply: hello
                reply_contains: Buongiorno
                reply_not_contains: Pronto
                reply_regex: '^\\d+$'
                reply_count: 2
                buttons: ["yes"]
                max_length: 10
                handoff: true
                error: true
                window_template: true
                ai_called: true
                similar_to: {text: "So long and thanks for all the fish", threshold: 0.9}
            - user: never sent
        """,
    )
    result = run("fail.yaml")
    replies = repr([GREETING])
    lines = [line for line in result.stdout.splitlines() if line.startswith("fail.yaml:")]
    assert result.exit_code == 1
    assert lines == [
        "fail.yaml:6:9: step 1 (user: ciao): stage: expected 'confirm', got 'menu'",
        "fail.yaml:7:9: step 1 (user: ciao): state: expected {'qty': 1}, got {}",
        "fail.yaml:8:9: step 1 (user: ciao): state_contains: pizza expected 'Funghi', not kept (state: {})",
        f"fail.yaml:9:9: step 1 (user: ciao): reply: expected 'hello', got {GREETING!r}",
        f"fail.yaml:10:9: step 1 (user: ciao): reply_contains: 'Buongiorno' not in the replies {replies}",
        f"fail.yaml:11:9: step 1 (user: ciao): reply_not_contains: 'Pronto' found in the replies {replies}",
        f"fail.yaml:12:9: step 1 (user: ciao): reply_regex: no match for '^\\\\d+$' in the replies {replies}",
        f"fail.yaml:13:9: step 1 (user: ciao): reply_count: expected 2, got 1 {replies}",
        "fail.yaml:14:9: step 1 (user: ciao): buttons: expected ['yes'], got []",
        f"fail.yaml:15:9: step 1 (user: ciao): max_length: reply 1 has {len(GREETING)} characters, more than 10",
        "fail.yaml:16:9: step 1 (user: ciao): handoff: expected the conversation handed to a person, it is in "
        "'bot' mode",
        "fail.yaml:17:9: step 1 (user: ciao): error: expected a failed turn, there was none",
        "fail.yaml:18:9: step 1 (user: ciao): window_template: expected a template (the 24-hour window closed), "
        "the replies went as free text",
        "fail.yaml:19:9: step 1 (user: ciao): ai_called: expected the AI to be called, it was not",
        "fail.yaml:20:9: step 1 (user: ciao): similar_to: 0.09 < 0.9 to 'So long and thanks for all the fish'; "
        f"replies {replies}",
    ]
    assert "  after step 1 (user: ciao):" in result.stdout
    assert "    stage: menu   mode: bot   state: {}" in result.stdout
    assert f"    reply 1: {GREETING!r}" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("0 passed, 1 failed (1 steps) in ")


def test_a_bad_test_file_is_reported_before_anything_runs() -> None:
    write(
        "bad.yaml",
        """
        - name: typos
          steps:
            - user: hi
              expect: {stage: confrim, state_contains: {quantity: 1}, reply_contain: x}
            - buton: "yes"
            - button: yess
            - wait: soon
        """,
    )
    result = run("bad.yaml")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "Error: bad.yaml:4:23: unknown stage 'confrim'. Hint: did you mean 'confirm'?\n"
        "bad.yaml:4:49: the bot never keeps a state value 'quantity'. Hint: kept by the bot: lat, lon, pizza, place, "
        "qty, total\n"
        "bad.yaml:4:63: unknown key 'reply_contain' in expect. Hint: did you mean 'reply_contains'?\n"
        "bad.yaml:5:7: unknown key 'buton' in a step. Hint: did you mean 'button'?\n"
        "bad.yaml:6:15: button: no stage offers a button 'yess'. Hint: did you mean 'yes'?\n"
        "bad.yaml:7:13: wait: invalid duration 'soon'. Hint: accepted forms: 30s, 15m, 24h, 7d, combinations like "
        "1h30m, or plain seconds such as 90\n"
        "(6 problems)\n"
    )


def test_update_rewrites_exact_replies_and_nothing_else() -> None:
    path = write(
        "snap.yaml",
        """
        # a comment that stays
        - name: snapshot
          start: 2026-03-02T19:00
          steps:
            - user: ciao   # first message
              expect: {stage: menu, reply: old greeting}
            - user: 1 funghi
              expect:
                reply: |
                  something else
                stage: confirm
        """,
    )
    result = run("snap.yaml", "--update")
    assert result.exit_code == 0, result.stdout
    quoted = json.dumps(GREETING, ensure_ascii=False)
    assert path.read_text() == textwrap.dedent(
        f"""\
        # a comment that stays
        - name: snapshot
          start: 2026-03-02T19:00
          steps:
            - user: ciao   # first message
              expect: {{stage: menu, reply: {quoted}}}
            - user: 1 funghi
              expect:
                reply: "1 × Funghi = 9.00 EUR. Shall we deliver it?"
                stage: confirm
        """
    )
    assert "-  expect: {stage: menu, reply: old greeting}" in result.stdout.replace("    ", "")
    assert "updated 2 replies in 1 file(s)" in result.stdout
    assert run("snap.yaml").exit_code == 0


def test_junit_and_github_annotations_point_at_the_failing_line() -> None:
    write(
        "ci.yaml",
        """
        - name: passes
          start: 2026-03-02T19:00
          steps:
            - user: ciao
              expect: {stage: menu}
        - name: fails, badly
          start: 2026-03-02T19:00
          steps:
            - user: ciao
              expect: {stage: confirm}
        """,
    )
    result = run("ci.yaml", "--format", "github", "--junit", "report.xml")
    assert result.exit_code == 1
    assert (
        "::error file=ci.yaml,line=10,col=16,title=fails%2C badly::step 1 (user: ciao): stage: expected 'confirm', "
        "got 'menu'"
    ) in result.stdout.splitlines()
    suite = ET.parse("report.xml").getroot().find("testsuite")  # noqa: S314 - the report this test just wrote
    assert suite is not None
    assert (suite.get("name"), suite.get("tests"), suite.get("failures")) == ("ci.yaml", "2", "1")
    cases = {case.get("name"): case for case in suite.iter("testcase")}
    assert cases["passes"].find("failure") is None
    failure = cases["fails, badly"].find("failure")
    assert failure is not None
    assert failure.get("message") == "step 1 (user: ciao): stage: expected 'confirm', got 'menu'"
    assert cases["fails, badly"].get("line") == "6"


def test_parallel_cases_are_isolated() -> None:
    cases = []
    for number in range(1, 13):
        wait = "    - wait: 3h\n    - user: hello\n      expect: {state: {}}\n" if number % 3 == 0 else ""
        cases.append(
            f"- name: order {number}\n  start: 2026-03-02T19:00\n  steps:\n    - user: ciao\n"
            f"    - user: {number} margherita\n      expect: {{state_contains: {{qty: {number}}}}}\n"
            f"    - user: {number} margherita\n      expect: {{stage: confirm}}\n{wait}"
        )
    write("many.yaml", "\n".join(cases))
    result = run("many.yaml", "--jobs", "4", "-k", "order")
    assert result.exit_code == 0, result.stdout
    assert result.stdout.splitlines()[-1].startswith("12 passed, 0 failed (44 steps) in ")


def test_k_selects_cases_and_no_match_is_an_error() -> None:
    write("k.yaml", "- name: one\n  steps:\n    - user: ciao\n- name: two\n  steps:\n    - user: ciao\n")
    assert "1 passed, 0 failed" in run("k.yaml", "-k", "TWO").stdout
    result = run("k.yaml", "-k", "three")
    assert (result.exit_code, result.stderr) == (1, "Error: no cases match -k 'three'\n")


def test_a_message_answered_after_the_window_gets_no_free_text() -> None:
    write(
        "late.yaml",
        """
        - name: late, no template
          start: 2026-03-02T19:00
          steps:
            - user: ciao
            - user: 2 diavola
              answered_after: 23h
              expect: {window_template: false, reply_count: 1}
            - user: 1 funghi
              answered_after: 25h
              expect: {window_template: false}
            - user: ciao
              answered_after: 1d1h
              expect: {window_template: true}
        """,
    )
    result = run("late.yaml")
    outside = "outside the 24-hour customer-service window"
    assert result.exit_code == 1
    assert [line for line in result.stdout.splitlines() if line.startswith("late.yaml:")] == [
        "late.yaml:13:16: step 4 (user: ciao, answered 1 day, 1:00:00 later): window_template: expected a template "
        f"(the 24-hour window closed), none went: the replies failed ({outside})"
    ]
    assert f"({'failed'}: {outside})" in result.stdout


def test_answered_after_belongs_to_a_message() -> None:
    write(
        "bad.yaml",
        "- name: x\n  steps:\n    - wait: 1h\n      answered_after: 25h\n    - user: hi\n      answered_after: later\n",
    )
    result = run("bad.yaml")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        "Error: bad.yaml:4:7: answered_after: only a message is answered, not a wait. Hint: e.g. '- user: hi' "
        "with 'answered_after: 25h'",
        "bad.yaml:6:23: answered_after: invalid duration 'later'. Hint: accepted forms: 30s, 15m, 24h, 7d, "
        "combinations like 1h30m, or plain seconds such as 90",
    ]
