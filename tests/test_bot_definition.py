"""stages.yaml: the schema, its located errors and hints, references, version, and the example bot."""

from __future__ import annotations

import shutil
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest

from chatops.config.bot import BUILTIN_VARIABLES, load_bot, validate_bot
from chatops.config.schedule import InvalidValue, parse_business_hours, parse_duration
from chatops.errors import BotDefinitionError

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = """\
bot:
  name: Test
  start: welcome
stages:
  welcome:
    reply: welcome.j2
"""


def write_bot(text: str, templates: dict[str, str] | None = None) -> Path:
    """Write stages.yaml and its templates into the test's directory (the working directory)."""
    path = Path("stages.yaml")
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    folder = Path("templates")
    folder.mkdir(exist_ok=True)
    for name, source in (templates if templates is not None else {"welcome.j2": "Hi!"}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(source, encoding="utf-8")
    return path


def load_error(text: str, templates: dict[str, str] | None = None) -> BotDefinitionError:
    with pytest.raises(BotDefinitionError) as caught:
        load_bot(write_bot(text, templates))
    return caught.value


# the example bot -----------------------------------------------------------------------------------------------------


def test_example_bot_loads_with_every_feature() -> None:
    bot = load_bot(ROOT / "stages.yaml")

    assert bot.bot.name == "Northwind Support"
    assert bot.bot.start in bot.stages
    assert bot.bot.session_timeout == timedelta(hours=24)
    assert bot.stages["triage"].intents == ("order_status", "refund", "opening_hours")
    assert {t.when.kind for t in bot.stages["triage"].transitions} == {
        "button",
        "keywords",
        "regex",
        "intent",
        "default",
    }
    assert any(stage.handoff for stage in bot.stages.values())
    assert {p.use for p in bot.providers} == {"lookup"}  # offline; the http kind: docs/providers.md, test_providers
    assert bot.whatsapp_template is not None
    assert bot.whatsapp_template.name == "northwind_follow_up"
    assert bot.templates_dir == ROOT / "templates"
    assert len(bot.version) == 12
    assert "_footer.j2" in bot.template_files  # included by handoff.j2, so part of the version


def test_definition_helpers() -> None:
    bot = load_bot(ROOT / "stages.yaml")

    assert bot.ai_for("questions").temperature == 0.5
    assert bot.ai_for("questions").model == bot.ai.model
    assert bot.ai_for("welcome") == bot.ai
    assert bot.template_variables("tracking")["order"] == frozenset({"number", "status", "eta", "items", "total"})
    assert "order" not in bot.template_variables("welcome")  # providers: []
    assert "order" not in bot.template_variables("tracking", on_error=True)
    assert "order" not in bot.template_variables()  # provider options, whatsapp_template params
    assert [p.name for p in bot.providers_for("questions")] == ["store"]
    assert bot.provider("order").options["file"] == "data/orders.yaml"  # sample orders: works offline
    location = bot.location(("stages", "triage", "prompt"))
    assert location is not None
    assert (
        (ROOT / "stages.yaml").read_text().splitlines()[location.line - 1][location.col - 1 :].startswith("triage.j2")
    )


def test_definition_is_frozen() -> None:
    bot = load_bot(write_bot(MINIMAL))
    with pytest.raises(pydantic.ValidationError):
        bot.bot.name = "Other"  # type: ignore[misc]


def test_minimal_bot_defaults() -> None:
    bot = load_bot(write_bot(MINIMAL))

    assert bot.bot.timezone == "UTC"
    assert bot.bot.max_replies == 3
    assert bot.bot.stale_after == timedelta(hours=1)
    assert bot.ai.timeout == 30.0
    assert bot.path == Path("stages.yaml")
    assert bot.templates_dir == Path("templates")
    assert bot.template_files == ("welcome.j2",)


def test_version_covers_stages_and_used_templates_only() -> None:
    path = write_bot(MINIMAL.replace("reply: welcome.j2", "reply: welcome.j2\n    on_error: sorry.j2"), {
        "welcome.j2": '{% include "parts/footer.j2" %}',
        "parts/footer.j2": "bye",
        "sorry.j2": "sorry",
        "unused.j2": "x",
    })  # fmt: skip
    first = load_bot(path).version
    Path("templates/unused.j2").write_text("changed")
    assert load_bot(path).version == first
    Path("templates/parts/footer.j2").write_text("changed")
    second = load_bot(path).version
    assert second != first
    path.write_text(path.read_text() + "# a comment\n")
    assert load_bot(path).version != second


def test_templates_dir_can_be_elsewhere(tmp_path: Path) -> None:
    path = write_bot(MINIMAL, {})
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "welcome.j2").write_text("hi")
    assert load_bot(path, templates_dir=other).templates_dir == other


# located errors with hints ---------------------------------------------------------------------------------------

ERRORS = [
    pytest.param(
        MINIMAL + "    next: bilingg\n  billing:\n    reply: welcome.j2\n",
        "stages.yaml:7:11: stage 'welcome' goes to unknown stage 'bilingg'",
        "did you mean 'billing'?",
        id="unknown-next",
    ),
    pytest.param(
        MINIMAL + "    transitions:\n      - when: {button: x}\n        to: nowhere\n",
        "stages.yaml:9:13: stage 'welcome' goes to unknown stage 'nowhere'",
        "defined stages: welcome",
        id="unknown-transition-target",
    ),
    pytest.param(
        MINIMAL.replace("start: welcome", "start: welcom"),
        "stages.yaml:3:10: bot.start names unknown stage 'welcom'",
        "did you mean 'welcome'?",
        id="unknown-start",
    ),
    pytest.param(
        MINIMAL.replace("  start: welcome\n", ""),
        "stages.yaml:2:3: bot: missing required key 'start'",
        "add `start:`; see docs/stages.md",
        id="missing-start",
    ),
    pytest.param(
        MINIMAL.replace("reply:", "promt: x.j2\n    reply:"),
        "stages.yaml:6:5: stages.welcome: unknown key 'promt'",
        "did you mean 'prompt'? Allowed keys: reply, prompt, buttons, list_button, transitions, next, on_error, "
        "handoff, handoff_timeout, handoff_return, ai, providers, clear, set, extract, ask, max_attempts, on_invalid, "
        "reveal_phone",
        id="unknown-stage-key",
    ),
    pytest.param(
        "botz: 1\n" + MINIMAL,
        "stages.yaml:1:1: unknown key 'botz'",
        "did you mean 'bot'? Allowed keys: bot, ai, variables, providers, stages, whatsapp_template",
        id="unknown-top-level-key",
    ),
    pytest.param(
        MINIMAL.replace("  start: welcome", "  start: welcome\n  session_timeout: 2 hours"),
        "stages.yaml:4:20: bot.session_timeout: invalid duration '2 hours'",
        "accepted forms: 30s, 15m, 24h, 7d, combinations like 1h30m, or plain seconds such as 90",
        id="bad-duration",
    ),
    pytest.param(
        MINIMAL.replace("  start: welcome", "  start: welcome\n  timezone: Europe/Berln"),
        "stages.yaml:4:13: bot.timezone: unknown timezone 'Europe/Berln'",
        "did you mean 'Europe/Berlin'? Use an IANA name such as Europe/Berlin or UTC",
        id="bad-timezone",
    ),
    pytest.param(
        MINIMAL.replace("  start: welcome", "  start: welcome\n  business_hours: Mon-Fry 09:00-17:00"),
        "stages.yaml:4:19: bot.business_hours: invalid business hours 'Mon-Fry 09:00-17:00': unknown day in 'Mon-Fry'",
        "days are Mon, Tue, Wed, Thu, Fri, Sat, Sun (or their full names)",
        id="bad-business-hours",
    ),
    pytest.param(
        MINIMAL.replace("  start: welcome", "  start: welcome\n  max_replies: 0"),
        "stages.yaml:4:16: bot.max_replies: input should be greater than or equal to 1 (got 0)",
        "see docs/stages.md",
        id="max-replies",
    ),
    pytest.param(
        MINIMAL + "    prompt: welcome.j2\n",
        "stages.yaml:7:5: stages.welcome: a stage has a reply or a prompt, not both",
        "reply: a fixed message from a template; prompt: a system prompt, the AI writes the reply",
        id="reply-and-prompt",
    ),
    pytest.param(
        MINIMAL + "    buttons:\n" + "".join(f"      - {{id: b{i}, title: B{i}}}\n" for i in range(11)),
        "stages.yaml:18:9: stages.welcome.buttons[10]: 11 buttons; at most 10 fit",
        "WhatsApp shows up to 3 reply buttons or a list of up to 10 rows (Messenger: 13 quick replies); split "
        "the choice over two stages",
        id="too-many-buttons",
    ),
    pytest.param(
        MINIMAL + "    buttons: [{id: a, title: A very long button title}]\n",
        "stages.yaml:7:30: stages.welcome.buttons[0].title: button title 'A very long button title' is 24 "
        "characters; at most 20 fit",
        "WhatsApp reply buttons and Messenger quick replies show 20 characters; put the details in the message "
        "or in a description",
        id="long-button-title",
    ),
    pytest.param(
        MINIMAL + "    buttons: [{id: a, title: A}, {id: a, title: B}]\n",
        "stages.yaml:7:39: stages.welcome.buttons[1].id: two buttons have the id 'a'",
        "button ids must be unique within a stage",
        id="duplicate-button-id",
    ),
    pytest.param(
        MINIMAL + "    buttons: [{id: ok, title: yes}]\n",
        "stages.yaml:7:31: stages.welcome.buttons[0].title: expected text (got True)",
        'YAML reads yes as bool; write it in quotes: "yes"',
        id="yaml-boolean",
    ),
    pytest.param(
        MINIMAL + "    transitions:\n      - when: {regex: '(unclosed'}\n        to: welcome\n",
        "stages.yaml:8:23: stages.welcome.transitions[0].when.regex: regex does not compile: missing ), "
        "unterminated subpattern at position 0",
        "Python re syntax; quote the pattern in single quotes so backslashes stay as written",
        id="bad-regex",
    ),
    pytest.param(
        MINIMAL + "    transitions:\n      - when: {button: a, intent: b}\n        to: welcome\n",
        "stages.yaml:8:15: stages.welcome.transitions[0].when: a condition has exactly one of button, keywords, "
        "regex, intent, state, if, default (found button, intent)",
        "write one transition per condition (state: may guard one other); they are tried in order",
        id="two-conditions",
    ),
    pytest.param(
        MINIMAL + "    transitions:\n      - when: {default: true}\n        to: welcome\n"
        "      - when: {button: a}\n        to: welcome\n",
        "stages.yaml:10:9: stages.welcome.transitions[1]: transitions after a `default` one can never match",
        "move the default transition last",
        id="after-default",
    ),
    pytest.param(
        MINIMAL + "    next: welcome\n    transitions:\n      - when: {button: a}\n        to: welcome\n",
        "stages.yaml:7:5: stages.welcome: a stage has next or transitions, not both",
        "next: move on right after replying; transitions: wait for the user's answer (use `when: {default: "
        "true}` as the fallback)",
        id="next-and-transitions",
    ),
    pytest.param(
        MINIMAL.replace("reply: welcome.j2", "reply: welcom.j2"),
        "stages.yaml:6:12: stage 'welcome' uses template 'welcom.j2', which is not in templates/",
        "did you mean 'welcome.j2'?",
        id="missing-template",
    ),
    pytest.param(
        MINIMAL.replace("reply: welcome.j2", "reply: ../secret.j2"),
        "stages.yaml:6:12: stages.welcome.reply: template name '../secret.j2' must be a path inside the "
        "templates folder",
        "write it relative to templates/, e.g. welcome.j2 or partials/footer.j2",
        id="template-outside",
    ),
    pytest.param(
        MINIMAL + "  welcome:\n    reply: welcome.j2\n",
        "stages.yaml:7:3: duplicate key 'welcome'",
        "'welcome' is already defined at line 5; remove one of them",
        id="duplicate-key",
    ),
    pytest.param(
        "bot: {name: x, start: a\n",
        "stages.yaml:2:1: invalid YAML: expected ',' or '}', but got '<stream end>'",
        "check the YAML near this position: indentation, quotes, brackets",
        id="yaml-syntax",
    ),
    pytest.param(
        "- just\n- a list\n",
        "stages.yaml:1:1: stages.yaml must be a mapping with the keys bot, ai, variables, providers, stages, "
        "whatsapp_template",
        "start from the example in docs/stages.md",
        id="not-a-mapping",
    ),
    pytest.param(
        MINIMAL + "providers:\n  - {name: order, use: htpp, provides: [status]}\n",
        "stages.yaml:8:24: providers[0].use: unknown provider kind 'htpp'",
        "did you mean 'http'? use http, sql, lookup, a dotted path (package.module:factory) or an entry point name",
        id="provider-kind",
    ),
    pytest.param(
        MINIMAL + "providers:\n  - name: order\n    use: http\n    urll: https://x\n    provides: [status]\n",
        "stages.yaml:10:5: providers[0]: unknown key 'urll' for an http provider",
        "did you mean 'url'? Allowed keys: name, use, provides, help, timeout, cache_ttl, retries, url, method, "
        "headers, body, select, missing",
        id="provider-option",
    ),
    pytest.param(
        MINIMAL + "providers:\n  - {name: rows, use: sql, query: select 1, provides: [a]}\n",
        "stages.yaml:8:5: providers[0]: an sql provider needs 'database_url'",
        "add `database_url:`; see docs/stages.md#providers",
        id="provider-required-option",
    ),
    pytest.param(
        MINIMAL + "providers:\n  - {name: user, use: pkg.mod:make, provides: [a]}\n",
        "stages.yaml:8:12: providers[0].name: provider name 'user' is a built-in variable",
        "built-ins: user, conversation, clock, message; choose another name",
        id="provider-builtin-name",
    ),
    pytest.param(
        MINIMAL + "providers:\n  - {name: hours, use: lookup, file: nope.yaml, key: user.id, provides: [a]}\n",
        "stages.yaml:8:38: provider 'hours' reads 'nope.yaml', which does not exist",
        "the path is relative to the folder of stages.yaml",
        id="lookup-file",
    ),
    pytest.param(
        MINIMAL + "    providers: [ordr]\nproviders:\n  - {name: order, use: x.y:z, provides: [a]}\n",
        "stages.yaml:7:17: stage 'welcome' uses unknown provider 'ordr'",
        "did you mean 'order'?",
        id="stage-provider",
    ),
    pytest.param(
        MINIMAL + "variables:\n  user: Bob\n",
        "stages.yaml:8:3: variables: variable 'user' is a built-in variable",
        "built-ins: user, conversation, clock, message; choose another name",
        id="variable-builtin-name",
    ),
    pytest.param(
        MINIMAL + "whatsapp_template: {name: Follow Up}\n",
        "stages.yaml:7:27: whatsapp_template.name: template name 'Follow Up' is not a WhatsApp template name",
        "use the name approved in WhatsApp Manager: lowercase letters, digits and underscores",
        id="whatsapp-template-name",
    ),
    pytest.param(
        MINIMAL + "ai: {temperature: 3}\n",
        "stages.yaml:7:19: ai.temperature: input should be less than or equal to 2 (got 3)",
        "see docs/stages.md",
        id="ai-temperature",
    ),
]


@pytest.mark.parametrize(("text", "message", "hint"), ERRORS)
def test_errors_are_located_with_a_hint(text: str, message: str, hint: str) -> None:
    error = load_error(text)
    assert str(error) == message
    assert error.hint == hint
    assert error.location == message.split(": ", 1)[0]


def test_load_raises_the_first_problem_and_validate_returns_all_in_file_order() -> None:
    text = MINIMAL.replace("start: welcome", "start: nowhere") + "    next: nowhere_else\n"
    result = validate_bot(write_bot(text))

    assert [(p.code, str(p.location)) for p in result.problems] == [
        ("E202", "stages.yaml:3:10"),
        ("E201", "stages.yaml:7:11"),
    ]
    assert result.bot is not None  # references are wrong, the schema is fine: the linter can go on
    assert str(load_error(text)) == "stages.yaml:3:10: bot.start names unknown stage 'nowhere'"


def test_unreadable_file() -> None:
    with pytest.raises(BotDefinitionError) as caught:
        load_bot(Path("missing.yaml"))
    assert str(caught.value) == "cannot read missing.yaml: No such file or directory"
    assert caught.value.hint == "pass the path of your stages.yaml, or set CHATOPS_STAGES"


def test_yaml_keys_are_text_as_written() -> None:
    # YAML 1.1 would read `no:` as False; a stage called "no" must stay "no".
    bot = load_bot(write_bot(MINIMAL + "    next: 'no'\n  no:\n    reply: welcome.j2\n"))
    assert list(bot.stages) == ["welcome", "no"]


def test_providers_keep_kind_options_apart() -> None:
    bot = load_bot(
        write_bot(
            MINIMAL
            + """\
providers:
  - name: order
    use: http
    url: "https://shop.example/orders?c={{ user.id }}"
    headers: {Authorization: "Bearer ${SHOP_TOKEN}"}
    provides: [status, eta]
    help: {status: where the parcel is}
    timeout: 1m30s
    cache_ttl: 30
  - {name: custom, use: "my_pkg.providers:make", provides: [a], anything: goes}
"""
        )
    )
    order, custom = bot.providers
    assert order.options == {"url": "https://shop.example/orders?c={{ user.id }}", "headers": {
        "Authorization": "Bearer ${SHOP_TOKEN}"}}  # fmt: skip
    assert order.timeout == timedelta(seconds=90)
    assert order.cache_ttl == timedelta(seconds=30)
    assert order.retries == 1
    assert order.template_options == {"url": order.options["url"], "headers": order.options["headers"]}
    assert custom.options == {"anything": "goes"}


# durations, business hours, built-ins ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30s", 30), ("15m", 900), ("24h", 86400), ("7d", 604800), ("1h30m", 5400), ("90", 90), (90, 90), (1.5, 1.5)],
)
def test_duration_forms(value: object, seconds: float) -> None:
    assert parse_duration(value).total_seconds() == seconds


@pytest.mark.parametrize("value", ["2 hours", "1.5h", "", "-5", 0, True, "h"])
def test_bad_durations(value: object) -> None:
    with pytest.raises(InvalidValue):
        parse_duration(value)


def test_business_hours() -> None:
    hours = parse_business_hours("Mon-Fri 09:00-17:00, Sat 10:00-14:00; Fri 22:00-02:00")
    assert hours.is_open(datetime(2025, 1, 6, 9, 0))  # Monday 09:00
    assert not hours.is_open(datetime(2025, 1, 6, 17, 0))
    assert hours.is_open(datetime(2025, 1, 4, 11, 0))  # Saturday
    assert hours.is_open(datetime(2025, 1, 4, 1, 30))  # Friday's late window runs past midnight
    assert not hours.is_open(datetime(2025, 1, 5, 11, 0))  # Sunday


def test_open_at_uses_the_bot_timezone() -> None:
    text = MINIMAL.replace(
        "start: welcome", "start: welcome\n  timezone: Europe/Berlin\n  business_hours: Mon 09:00-10:00"
    )
    bot = load_bot(write_bot(text))
    assert bot.bot.open_at(datetime(2025, 1, 6, 8, 30, tzinfo=UTC)) is True  # 09:30 in Berlin
    assert bot.bot.open_at(datetime(2025, 1, 6, 9, 30, tzinfo=UTC)) is False
    assert load_bot(write_bot(MINIMAL)).bot.open_at(datetime(2025, 1, 6, tzinfo=UTC)) is None


def test_builtin_variables_match_the_templating_providers() -> None:
    from chatops.templating.builtin import BUILTIN_PROVIDERS

    assert {p.name: frozenset(p.provides) for p in BUILTIN_PROVIDERS} == dict(BUILTIN_VARIABLES)


def test_example_data_is_shipped() -> None:
    assert (ROOT / "data" / "store_hours.yaml").is_file()
    copy = Path("copy")
    shutil.copytree(ROOT / "templates", copy / "templates")
    shutil.copy(ROOT / "stages.yaml", copy / "stages.yaml")
    shutil.copytree(ROOT / "data", copy / "data")
    assert load_bot(copy / "stages.yaml").version == load_bot(ROOT / "stages.yaml").version
