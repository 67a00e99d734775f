"""lint-templates follows conversation memory through the stage graph: W301, N301, E102 for state, W203."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.templating.lint import lint_bot
from tests.conftest import ROOT

BOT = """\
bot:
  name: Shop
  start: welcome
stages:
  welcome:
    reply: welcome.j2
    next: menu
  menu:
    reply: menu.j2
    buttons: [{id: size, title: Size}]
    transitions:
      - when: {regex: '(?P<qty>\\d+) (?P<pizza>\\w+)'}
        to: confirm
        set: {qty: "match.qty | int", pizza: match.pizza}
      - when: {keywords: [again]}
        to: confirm
      - when: {button: size, state: {qty: {defined: true}}}
        to: sized
      - when: {keywords: [note]}
        to: menu
        set: {note: message.text}
  confirm:
    reply: confirm.j2
    transitions:
      - when: {keywords: [reset]}
        to: reset
      - when: {default: true}
        to: menu
  sized:
    reply: sized.j2
    next: menu
  reset:
    reply: reset.j2
    clear: true
    next: menu
"""
TEMPLATES = {
    "welcome.j2": "Hi!",
    "menu.j2": "Menu",
    "confirm.j2": "{{ state.qty }} x {{ state.pizza | default('pizza') }}",
    "sized.j2": "{{ state.qty }} {{ state.qyt }}",
    "reset.j2": "{% if state.qty %}{{ state.qty }}{% endif %} {{ state.pizza is defined }}",
}


def write(folder: Path, stages: str = BOT, templates: dict[str, str] | None = None) -> Path:
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    for name, source in (templates or TEMPLATES).items():
        (folder / "templates" / name).write_text(source)
    (folder / "stages.yaml").write_text(stages)
    return folder / "stages.yaml"


def lines(path: Path) -> list[str]:
    return [f"{f.file}:{f.line}:{f.col}: {f.code} {f.text}" for f in lint_bot(path).findings]


def test_state_flow_findings(tmp_path: Path) -> None:
    assert lines(write(tmp_path)) == [
        "stages.yaml:21:15: N301 state.note is set but never read (stage menu) — no template, set: or condition "
        "reads it; remove it, or use it",
        # Reached by "again" before any order: the regex transition is the only one that sets qty.
        "templates/confirm.j2:1:10: W301 state.qty may be unset here (stage confirm) — e.g. on the path "
        "welcome → menu → confirm; set it on every path, or guard it: state.qty | default(…), is defined, or {% if %}",
        # sized.j2's state.qty is proven by the transition's state: condition; qyt is a typo.
        "templates/sized.j2:1:26: E102 state.qyt is set nowhere (stage sized) — did you mean 'qty'?",
    ]


def test_clear_makes_a_name_unset_again(tmp_path: Path) -> None:
    stages = textwrap.dedent(
        """\
        bot: {name: Loop, start: start}
        stages:
          start: {reply: a.j2, next: menu, set: {x: 1}}
          menu:
            reply: a.j2
            transitions:
              - {when: {default: true}, to: show}
          show: {reply: show.j2, next: menu}
        """
    )
    templates = {"a.j2": "a", "show.j2": "{{ state.x }}"}
    assert lines(write(tmp_path, stages, templates)) == []
    cleared = stages.replace("show: {reply: show.j2, next: menu}", "show: {reply: show.j2, next: menu, clear: [x]}")
    assert lines(write(tmp_path, cleared, templates)) == [
        "templates/show.j2:1:10: W301 state.x may be unset here (stage show) — e.g. on the path start → menu → show; "
        "set it on every path, or guard it: state.x | default(…), is defined, or {% if %}"
    ]


def test_form_fields_are_set_for_the_reply_but_not_for_the_ask_template(tmp_path: Path) -> None:
    stages = textwrap.dedent(
        """\
        bot: {name: Form, start: start}
        stages:
          start: {reply: a.j2, next: order}
          order:
            extract: {qty: {type: integer}, note: {type: string, required: false}}
            ask: ask.j2
            reply: done.j2
            next: start
        """
    )
    templates = {
        "a.j2": "a",
        "ask.j2": "{{ form.field }} {{ state.qty }}",
        "done.j2": "{{ state.qty }} {{ state.note }}",
    }
    assert lines(write(tmp_path, stages, templates)) == [
        "templates/ask.j2:1:27: W301 state.qty may be unset here (in its ask template) (stage order) — e.g. on the "
        "path start → order; set it on every path, or guard it: state.qty | default(…), is defined, or {% if %}",
        "templates/done.j2:1:26: W301 state.note may be unset here (stage order) — e.g. on the path start → order; "
        "set it on every path, or guard it: state.note | default(…), is defined, or {% if %}",
    ]


def test_the_start_stage_trap(tmp_path: Path) -> None:
    stages = textwrap.dedent(
        """\
        bot: {name: Trap, start: welcome}
        stages:
          welcome:
            reply: a.j2
            transitions:
              - {when: {default: true}, to: other}
          other: {reply: a.j2, next: welcome}
        """
    )
    [finding] = lint_bot(write(tmp_path, stages, {"a.j2": "a"})).findings
    assert (finding.file, finding.line, finding.col, finding.code) == ("stages.yaml", 5, 5, "W203")
    assert finding.message.startswith("start stage 'welcome' never shows its reply to a new conversation")


@pytest.mark.parametrize("folder", [ROOT, ROOT / "examples" / "pizza"])
def test_the_example_bots_lint_clean_with_strict(folder: Path) -> None:
    result = CliRunner().invoke(app, ["lint-templates", str(folder / "stages.yaml"), "--strict"])
    assert result.exit_code == 0, result.stdout
    assert result.stdout.startswith("No problems found")


def test_the_flow_pass_is_not_quadratic(tmp_path: Path) -> None:
    """A chain of 2,000 stages, each setting a name that the next reads: linear work, well under a second."""
    count = 2000
    stage_lines = ["bot: {name: Chain, start: s0}", "stages:"]
    for index in range(count):
        following = f"s{(index + 1) % count}"
        read = f"s{index}.j2"
        stage_lines.append(
            f"  s{index}: {{reply: {read}, transitions: [{{when: {{default: true}}, to: {following}, "
            f"set: {{v{index}: {index}}}}}]}}"
        )
    templates = {f"s{i}.j2": f"{{{{ state.v{i - 1} | default(0) }}}}" for i in range(count)}
    path = write(tmp_path, "\n".join(stage_lines) + "\n", templates)
    from chatops.config.bot import load_bot
    from chatops.templating.flow import StateFlow

    bot = load_bot(path)
    started = time.perf_counter()
    flow = StateFlow(bot)
    elapsed = time.perf_counter() - started
    assert flow.surely_set("s5", "answer") == frozenset({"v0", "v1", "v2", "v3", "v4"})  # the only way to s5
    assert elapsed < 2.0, elapsed


def test_the_graph_in_the_docs_is_the_pizza_examples(tmp_path: Path) -> None:
    pizza = ROOT / "examples" / "pizza" / "stages.yaml"
    result = CliRunner().invoke(app, ["lint-templates", str(pizza), "--graph", "mermaid"])
    assert result.exit_code == 0
    assert f"```mermaid\n{result.stdout}```" in (ROOT / "docs" / "stages.md").read_text()
    assert '  s1 -->|"regex (qty, pizza) · set qty, pizza"| s3\n' in result.stdout

    dot = CliRunner().invoke(app, ["lint-templates", str(pizza), "--graph", "dot"])
    assert dot.exit_code == 0
    assert dot.stdout.startswith("digraph stages {\n")
    assert '  "confirm" [label="confirm · form: qty, pizza · set total"];\n' in dot.stdout
    assert '  "confirm" -> "start_over" [label="on_invalid"];\n' in dot.stdout


GROUPS = """\
bot:
  name: Shop
  start: menu
stages:
  menu:
    reply: menu.j2
    buttons: [{id: track, title: Track}]
    transitions:
      - when: {regex: '#(?P<order_no>\\d{5})'}
        to: tracking
        set: {order_no: match.order_no, carrier: match.order_nr}
      - when: {button: track}
        to: tracking
        set: {via: match.order_no}
      - when: {if: "match.order_no"}
        to: tracking
      - when: {regex: '(?P<qty>\\d+) (?P<pizza>\\w+)'}
        to: pizza
  tracking:
    reply: tracking.j2
    on_error: sorry.j2
    next: menu
  pizza:
    reply: pizza.j2
    set: {size: match.size}
    next: menu
"""
GROUP_TEMPLATES = {
    "menu.j2": "Menu {{ state.order_no | default('') }}{{ state.carrier | default('') }}{{ state.via | default('') }}"
    "{{ state.size | default('') }}",
    "tracking.j2": "Order {{ match.order_no }}",
    "sorry.j2": "Sorry about {{ match.order_no }}",
    "pizza.j2": "{{ match.qty }} x {{ match.pizza }}{% if match.crust is defined %}!{% endif %}",
}


def test_match_groups_are_checked_against_the_regex_of_each_way_into_the_stage(tmp_path: Path) -> None:
    assert lines(write(tmp_path, GROUPS, GROUP_TEMPLATES)) == [
        "stages.yaml:11:56: E302 match.order_nr is never set: this transition has no regex group 'order_nr' "
        "(stage menu) — did you mean 'order_no'?",
        "stages.yaml:14:26: E302 match.order_no is never set: this transition has no regex group 'order_no' "
        "(stage menu) — it has no regex, so match is empty",
        "stages.yaml:15:21: E101 undefined variable 'match' (stage menu) — conditions are tried before a transition "
        "is chosen, so there is no match yet: test the text with when: {regex: …} and read match in that "
        "transition's set:",
        "stages.yaml:25:23: E302 match.size is never set: no regex that leads here has a group 'size' (stage pizza) "
        "— groups here: pizza, qty",
        "templates/pizza.j2:1:48: W101 match.crust is never set: no regex that leads here has a group 'crust' "
        "(stage pizza) — groups here: pizza, qty",
        "templates/sorry.j2:1:22: E302 match.order_no is never set: on_error templates see no match (stage tracking) "
        "— read state.order_no (set: keeps a group)",
        "templates/tracking.j2:1:16: W302 match.order_no may be undefined here (stage tracking) — the stage also "
        "answers after the transition from 'menu' (button track), where match has no 'order_no' (its groups: none); "
        "keep the group with set: on the transition and read state.order_no, or guard it: match.order_no | default(…)",
    ]


def test_a_stage_answering_again_has_no_match(tmp_path: Path) -> None:
    stages = GROUPS.replace("    on_error: sorry.j2\n    next: menu\n", "    on_error: sorry.j2\n").replace(
        "      - when: {button: track}\n        to: tracking\n        set: {via: match.order_no}\n", ""
    )
    found = [line for line in lines(write(tmp_path, stages, GROUP_TEMPLATES)) if "tracking.j2" in line]
    assert found == [
        "templates/tracking.j2:1:16: W302 match.order_no may be undefined here (stage tracking) — the stage also "
        "answers after the transition from 'menu' (if match.order_no), where match has no 'order_no' (its groups: "
        "none); keep the group with set: on the transition and read state.order_no, or guard it: "
        "match.order_no | default(…)",
    ]
