"""``chatops lint-templates``: every rule, scoping, output formats, exit codes, and a 1,000-template bot."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from chatops.cli.lint_templates import lint_templates_command
from chatops.templating.lint import RULES, LintReport, format_github, lint_bot

ROOT = Path(__file__).resolve().parent.parent

BOT = """\
bot:
  name: Shop
  start: welcome
variables:
  company: Northwind
  links: {faq: "https://x.example/faq"}
providers:
  - name: order
    use: http
    url: "https://shop.example/orders?customer={{ user.id }}"
    provides: [status, eta]
stages:
  welcome:
    reply: welcome.j2
    buttons: [{id: track, title: Track}]
    transitions:
      - when: {button: track}
        to: tracking
  tracking:
    reply: tracking.j2
    providers: [order]
    on_error: sorry.j2
    next: welcome
"""
TEMPLATES = {
    "welcome.j2": "Hi {{ user.name | default('there') }}, welcome to {{ company }}.",
    "tracking.j2": "Your order is {{ order.status }}.",
    "sorry.j2": "Sorry, {{ company }} could not look that up.",
}


def write_bot(text: str = BOT, templates: dict[str, str] | None = None) -> Path:
    path = Path("stages.yaml")
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    folder = Path("templates")
    folder.mkdir(exist_ok=True)
    for name, source in {**TEMPLATES, **(templates or {})}.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source, encoding="utf-8")
    return path


def lint(text: str = BOT, templates: dict[str, str] | None = None) -> LintReport:
    return lint_bot(write_bot(text, templates))


def lines(report: LintReport) -> list[str]:
    """``file:line:col: CODE text`` per finding."""
    return [f"{f.file}:{f.line}:{f.col}: {f.code} {f.text}" for f in report.findings]


def run_cli(*args: str) -> tuple[int, str, str]:
    app = typer.Typer()
    app.command("lint-templates")(lint_templates_command)
    app.command("noop")(lambda: None)  # two commands, so the command name is an argument as in `chatops`
    result = CliRunner().invoke(app, ["lint-templates", *args])
    return result.exit_code, result.stdout, result.stderr


# the example bot and a clean bot -------------------------------------------------------------------------------


def test_example_bot_lints_clean(tmp_path: Path) -> None:
    for name in ("stages.yaml",):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "data", tmp_path / "data")

    code, out, err = run_cli("--strict")

    assert (code, err) == (0, "")
    assert out == "No problems found (10 templates, 7 stages).\n"


def test_clean_bot() -> None:
    report = lint()
    assert report.findings == ()
    assert (report.templates, report.stages, report.exit_code(strict=True)) == (3, 2, 0)


# template rules ------------------------------------------------------------------------------------------------


def test_undefined_variable_text_with_source_line_and_caret() -> None:
    write_bot(templates={"tracking.j2": "Status:\nYour order {{ ordr.status }} is on its way."})

    code, out, _ = run_cli()

    assert code == 1
    assert out == (
        "templates/tracking.j2:2:15: error E101 undefined variable 'ordr' (stage tracking) — did you mean 'order'?\n"
        "    Your order {{ ordr.status }} is on its way.\n"
        "                  ^^^^\n"
        "Found 1 error and 0 warnings (3 templates, 2 stages).\n"
    )


def test_undefined_attribute_of_a_provider() -> None:
    report = lint(templates={"tracking.j2": "{{ order.statsu }} {{ order.eta }} {{ order.get('x') }}"})
    assert lines(report) == [
        "templates/tracking.j2:1:10: E102 undefined attribute 'statsu' of 'order' (stage tracking) — did you "
        "mean 'status'?"
    ]


def test_attribute_without_close_match_lists_what_is_provided() -> None:
    report = lint(templates={"tracking.j2": "{{ clock.moon }} {{ links['nope'] }}"})
    assert lines(report) == [
        "templates/tracking.j2:1:10: E102 undefined attribute 'moon' of 'clock' (stage tracking) — 'clock' "
        "provides: business_hours, hour, now, time, timezone, today, weekday",
        "templates/tracking.j2:1:28: E102 undefined attribute 'nope' of 'links' (stage tracking) — 'links' "
        "provides: faq, get, items, keys, values",
    ]


def test_provider_is_only_available_where_the_stage_lists_it() -> None:
    report = lint(templates={"welcome.j2": "{{ order.status }}", "sorry.j2": "{{ order.status }}"})
    # welcome does not list providers (so it has all), sorry.j2 is an on_error template: no providers there.
    assert lines(report) == ["templates/sorry.j2:1:4: E101 undefined variable 'order' (stage tracking)"]
    restricted = BOT.replace("    reply: welcome.j2\n", "    reply: welcome.j2\n    providers: []\n")
    report = lint(restricted, templates={"welcome.j2": "{{ order.status }}", "sorry.j2": "x"})
    assert lines(report) == ["templates/welcome.j2:1:4: E101 undefined variable 'order' (stage welcome)"]


def test_a_template_shared_by_stages_reports_once_with_every_stage() -> None:
    text = BOT.replace("    reply: tracking.j2", "    reply: welcome.j2")
    report = lint(text, templates={"welcome.j2": "{{ nope }}", "tracking.j2": "unused now"})
    assert lines(report) == [
        "templates/tracking.j2:1:1: W102 template is not used by any stage — remove it, or use it",
        "templates/welcome.j2:1:4: E101 undefined variable 'nope' (stages welcome, tracking)",
    ]
    assert report.findings[1].to_json()["stage"] == "welcome, tracking"


def test_guarded_uses_are_warnings() -> None:
    template = (
        "{{ nickname | default('you') }}\n"
        "{% if coupon is defined %}{{ coupon.code }}{% endif %}\n"
        "{% if vip %}VIP {{ vip.level }}{% else %}{{ vip }}{% endif %}\n"
        "{{ order.discount if order.discount is defined else '' }}\n"
    )
    report = lint(templates={"tracking.j2": template})

    assert [(f.line, f.col, f.code) for f in report.findings] == [
        (1, 4, "W101"),
        (2, 7, "W101"),
        (2, 30, "W101"),
        (3, 7, "W101"),
        (3, 20, "W101"),
        (3, 45, "W101"),
        (4, 10, "W101"),
        (4, 28, "W101"),
    ]
    assert report.findings[0].text == (
        "undefined variable 'nickname' (stage tracking) — it is guarded (|default, is defined or if), so it renders; "
        "declare it or drop the guard"
    )
    assert report.exit_code() == 0
    assert report.exit_code(strict=True) == 1


def test_locals_are_not_context_variables() -> None:
    template = """\
{% set greeting = "Hi" %}{{ greeting }}
{% for item in order.eta %}{{ loop.index }} {{ item }}{% else %}none{% endfor %}
{% macro line(label, value="") %}{{ label }}: {{ value }} {{ caller() if caller }}{{ varargs }}{% endmacro %}
{{ line("status", order.status) }}
{% call(row) line("x") %}{{ row }}{% endcall %}
{% with total = 3 %}{{ total }}{% endwith %}
{% set ns = namespace(count=0) %}{% set ns.count = ns.count + 1 %}{{ ns.count }}
{% set block %}{{ company }}{% endset %}{{ block }}
{% for a, b in links.items() %}{{ a }}={{ b }}{% endfor %}
{{ range(3) | list }} {{ later() }}
{% macro later() %}ok{% endmacro %}
"""
    assert lines(lint(templates={"tracking.j2": template})) == []


def test_names_leave_their_scope() -> None:
    template = "{% for item in order.eta %}{{ item }}{% endfor %}{{ item }}\n{% with t = 1 %}{% endwith %}{{ t }}"
    assert lines(lint(templates={"tracking.j2": template})) == [
        "templates/tracking.j2:1:53: E101 undefined variable 'item' (stage tracking)",
        "templates/tracking.j2:2:33: E101 undefined variable 't' (stage tracking)",
    ]


def test_column_skips_text_and_string_literals() -> None:
    template = "order: {{ 'order' }} {{ ordr }} {{ ordr }}"
    report = lint(templates={"tracking.j2": template})
    assert [(f.col, f.code) for f in report.findings] == [(25, "E101"), (36, "E101")]


def test_includes_and_imports() -> None:
    templates = {
        "tracking.j2": (
            '{% include "parts/footer.j2" %}\n'
            '{% from "macros.j2" import sign %}{{ sign() }}\n'
            '{% import "macros.j2" as m with context %}{{ m.sign() }}\n'
            '{% include "nope.j2" %}'
        ),
        "parts/footer.j2": "{{ order.status }} {{ oops }}",
        "macros.j2": "{% macro sign() %}{{ company }}{% endmacro %}",
    }
    assert lines(lint(templates=templates)) == [
        "templates/macros.j2:1:22: E101 undefined variable 'company' (imported without context by tracking.j2) — "
        "add `with context` to the import",
        "templates/parts/footer.j2:1:23: E101 undefined variable 'oops' (stage tracking)",
        "templates/tracking.j2:4:13: E103 included template 'nope.j2' does not exist",
    ]


def test_syntax_error_and_unknown_filter() -> None:
    report = lint(templates={"tracking.j2": "ok\n{% if order.status %}", "welcome.j2": "{{ company | uper }}"})
    found = lines(report)
    # Jinja lists the tags it expected in set order, which varies between runs.
    assert found[0].startswith("templates/tracking.j2:2:1: E100 syntax error: Unexpected end of template.")
    assert found[1:] == ["templates/welcome.j2:1:14: E104 unknown filter 'uper' — did you mean 'upper'?"]


def test_missing_template_named_by_a_stage_and_unused_template() -> None:
    text = BOT.replace("reply: tracking.j2", "reply: trackin.j2")
    assert lines(lint(text)) == [
        "stages.yaml:20:12: E103 stage 'tracking' uses template 'trackin.j2', which is not in templates/ — did "
        "you mean 'tracking.j2'?",
        "templates/tracking.j2:1:1: W102 template is not used by any stage — remove it, or use it",
    ]


def test_text_that_can_grow_without_bound_in_a_loop_is_a_warning() -> None:
    template = (
        "{% set ns = namespace(text='', bar='') %}\n"
        "{% for o in [1, 2] %}\n"
        "{{ '-' * o }} {{ '-' * 20 }} {{ o * o }} {{ 'x'.ljust(10) }} {{ company | center(30) }}\n"
        "{{ company.ljust(o) }} {{ company | indent(o) }} {{ '%*d' % (o, 1) }}\n"
        "{{ '{:>{w}}'.format(company, w=o) }} {{ lipsum(o) }}\n"
        "{% set ns.text = ns.text ~ company %}{% set ns.bar = ns.bar ~ ns.bar %}{% set ns.text = ns.text * 2 %}\n"
        "{% endfor %}{{ '-' * company | length }}\n"
    )
    report = lint(templates={"welcome.j2": template})

    assert [(f.line, f.col, f.code, f.message) for f in report.findings] == [
        (3, 8, "W103", "repetition '*' by a number the template computes, inside a loop"),
        (4, 12, "W103", "'.ljust()' with a width the template computes, inside a loop"),
        (4, 37, "W103", "filter 'indent' with a width the template computes"),
        (4, 54, "W103", "a '%*' format width the template computes, inside a loop"),
        (5, 14, "W103", "a nested '{…{width}}' format field the template computes"),
        (5, 41, "W103", "lipsum() with a size the template computes, inside a loop"),
        (6, 48, "W103", "'ns.bar' is set to two copies of itself: it doubles in every loop"),
        (6, 97, "W103", "'ns.text' is set to a multiple of itself: it grows in every loop"),
    ]
    assert report.findings[0].hint == "use a constant, or clamp the value first (e.g. [width, 40] | min)"
    assert report.exit_code() == 0
    assert report.exit_code(strict=True) == 1


def test_templates_in_stages_yaml() -> None:
    text = BOT.replace("{{ user.id }}", "{{ usr.id }}") + (
        'whatsapp_template:\n  name: follow_up\n  params: ["{{ user.nam }}", "{{ order.status }}"]\n'
    )
    assert lines(lint(text)) == [
        "stages.yaml:10:51: E101 undefined variable 'usr' (provider order) — did you mean 'user'?",
        "stages.yaml:26:21: E102 undefined attribute 'nam' of 'user' (whatsapp_template) — did you mean 'name'?",
        "stages.yaml:26:34: E101 undefined variable 'order' (whatsapp_template)",
    ]


def test_lookup_key_is_an_expression() -> None:
    Path("hours.yaml").write_text("Monday: {opens: '9'}\n")
    text = BOT.replace(
        "stages:\n",
        "  - {name: hours, use: lookup, file: hours.yaml, key: clock.weekdy, provides: [opens]}\nstages:\n",
    )
    assert lines(lint(text)) == [
        "stages.yaml:12:61: E102 undefined attribute 'weekdy' of 'clock' (provider hours) — did you mean 'weekday'?"
    ]


# stage graph rules ---------------------------------------------------------------------------------------------


def test_stage_graph() -> None:
    text = BOT + (
        "  orphan:\n    reply: welcome.j2\n"
        "  stuck: {}\n"
        "  asks:\n    reply: welcome.j2\n    transitions:\n      - when: {button: trak}\n        to: welcome\n"
    )
    assert lines(lint(text)) == [
        "stages.yaml:24:3: W201 stage 'orphan' is unreachable from 'welcome' — add a transition or next that leads "
        "to it, or remove it",
        "stages.yaml:26:3: E203 stage 'stuck' has no reply and no way out — give it reply: or prompt:, and "
        "transitions: or next: (or handoff: true)",
        "stages.yaml:26:3: W201 stage 'stuck' is unreachable from 'welcome' — add a transition or next that leads "
        "to it, or remove it",
        "stages.yaml:27:3: W201 stage 'asks' is unreachable from 'welcome' — add a transition or next that leads "
        "to it, or remove it",
        "stages.yaml:30:24: W202 transition on button 'trak', which no stage offers (stage asks) — did you mean "
        "'track'?",
    ]


def test_load_errors_are_findings() -> None:
    text = BOT.replace("start: welcome", "start: welcom").replace("next: welcome", "next: welcme")
    assert lines(lint(text)) == [
        "stages.yaml:3:10: E202 bot.start names unknown stage 'welcom' — did you mean 'welcome'?",
        "stages.yaml:23:11: E201 stage 'tracking' goes to unknown stage 'welcme' — did you mean 'welcome'?",
    ]
    report = lint(BOT.replace("    reply: welcome.j2", "    reply: welcome.j2\n    promt: x"))
    assert lines(report) == [
        "stages.yaml:15:5: E200 stages.welcome: unknown key 'promt' — did you mean 'prompt'? Allowed keys: reply, "
        "prompt, buttons, list_button, transitions, next, on_error, handoff, handoff_timeout, handoff_return, ai, "
        "providers, clear, set, extract, ask, max_attempts, on_invalid, reveal_phone"
    ]
    assert (report.templates, report.stages) == (0, 0)


def test_every_rule_is_documented() -> None:
    doc = (ROOT / "docs" / "lint-rules.md").read_text()
    for code, (severity, _) in RULES.items():
        assert f"## {code}" in doc, code
        assert code.startswith({"error": "E", "warning": "W", "note": "N"}[severity])


# output formats and exit codes ---------------------------------------------------------------------------------


def test_json_format() -> None:
    write_bot(templates={"tracking.j2": "{{ ordr }}", "welcome.j2": "{{ x | default(1) }}"})
    code, out, _ = run_cli("--format", "json")
    assert code == 1
    assert json.loads(out) == [
        {
            "file": "templates/tracking.j2",
            "line": 1,
            "col": 4,
            "severity": "error",
            "code": "E101",
            "message": "undefined variable 'ordr' (stage tracking) — did you mean 'order'?",
            "stage": "tracking",
            "hint": "did you mean 'order'?",
        },
        {
            "file": "templates/welcome.j2",
            "line": 1,
            "col": 4,
            "severity": "warning",
            "code": "W101",
            "message": "undefined variable 'x' (stage welcome) — it is guarded (|default, is defined or if), so it "
            "renders; declare it or drop the guard",
            "stage": "welcome",
            "hint": "it is guarded (|default, is defined or if), so it renders; declare it or drop the guard",
        },
    ]


def test_github_format() -> None:
    write_bot(templates={"tracking.j2": "{{ ordr }}"})
    code, out, _ = run_cli("--format", "github")
    assert code == 1
    assert out == (
        "::error file=templates/tracking.j2,line=1,col=4,title=E101::undefined variable 'ordr' (stage tracking) — "
        "did you mean 'order'?\n"
    )


def test_github_escapes() -> None:
    report = lint(templates={"tracking.j2": "{{ a }}"})
    finding = report.findings[0]
    odd = LintReport((type(finding)(**{**finding.__dict__, "file": "t,1:2.j2", "message": "50%\nnext"}),), 1, 1)
    assert format_github(odd) == ("::error file=t%2C1%3A2.j2,line=1,col=4,title=E101::50%25%0Anext (stage tracking)\n")


def test_strict_makes_warnings_fail() -> None:
    write_bot(templates={"tracking.j2": "{{ order.status }}{{ x | default('') }}"})
    assert run_cli()[0] == 0
    assert run_cli("--strict")[0] == 1


def test_usage_errors_exit_2() -> None:
    code, out, err = run_cli("missing.yaml")
    assert (code, out) == (2, "")
    assert err == "Error: missing.yaml does not exist\nHint: pass the path of your stages.yaml, or set CHATOPS_STAGES\n"
    write_bot()
    code, _, err = run_cli("--format", "xml")
    assert code == 2
    assert "Invalid value for '--format'" in err


def test_path_argument_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    folder = Path("bot")
    folder.mkdir()
    (folder / "stages.yaml").write_text(BOT)
    shutil.copytree(Path(write_bot()).parent / "templates", folder / "templates")
    code, out, _ = run_cli("bot/stages.yaml")
    assert (code, out) == (0, "No problems found (3 templates, 2 stages).\n")
    monkeypatch.setenv("CHATOPS_STAGES", "bot/stages.yaml")
    monkeypatch.setenv("CHATOPS_TEMPLATES", "templates")  # the top-level copy
    Path("templates/tracking.j2").write_text("{{ ordr }}")
    assert run_cli()[0] == 1


# a large bot ---------------------------------------------------------------------------------------------------


def generate_bot(folder: Path, *, stages: int = 200, templates: int = 1000) -> int:
    """A bot of ``stages`` stages whose templates include ``templates`` files in all; returns the broken count.

    Every stage has a reply and an on_error template; the remaining files are partials included by the replies.
    Every 50th partial reads an undefined variable.
    """
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    partials = templates - 2 * stages
    per_stage = partials // stages
    lines_ = ["bot: {name: Big, start: s0}", "variables: {company: Big}", "providers:",
              "  - {name: order, use: http, url: 'https://x.example/{{ user.id }}', provides: [status, eta]}",
              "stages:"]  # fmt: skip
    broken = 0
    for index in range(stages):
        includes = ""
        for part in range(per_stage):
            number = index * per_stage + part
            bad = number % 50 == 0
            broken += bad
            name = "ordr" if bad else "order"
            body = "{% for i in order.eta %}{{ i }} {{ loop.index }}{% endfor %} {{ " + name + ".status }}\n"
            (folder / "templates" / f"part{number}.j2").write_text(body * 3)
            includes += f'{{% include "part{number}.j2" %}}\n'
        (folder / "templates" / f"reply{index}.j2").write_text(
            f"Hello {{{{ user.name | default('you') }}}} from {{{{ company }}}}\n{includes}"
        )
        (folder / "templates" / f"error{index}.j2").write_text("Sorry, {{ company }}.")
        lines_ += [f"  s{index}:", f"    reply: reply{index}.j2", f"    on_error: error{index}.j2",
                   f"    next: s{(index + 1) % stages}"]  # fmt: skip
    (folder / "stages.yaml").write_text("\n".join(lines_) + "\n")
    return broken


def test_a_thousand_templates(tmp_path: Path) -> None:
    broken = generate_bot(tmp_path / "big")
    report = lint_bot(tmp_path / "big" / "stages.yaml")

    assert (report.templates, report.stages) == (1000, 200)
    assert broken == 12
    assert [f.code for f in report.findings] == ["E101"] * broken * 3  # three lines per broken partial
    assert {(f.line, f.col) for f in report.findings} == {(1, 65), (2, 65), (3, 65)}
    assert report.findings[0].stages == ("s0",)
