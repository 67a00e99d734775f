"""Conversation memory: regex capture, set:, clear:, state conditions, the session timeout and the size limits.

The pizza example (examples/pizza) runs through ``chatops simulate`` (the real route, parser, inbox and worker) on
SQLite and PostgreSQL; the edge cases run through ``handle_turn`` on small bots written here.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from chatops.ai.offline import OfflineResponder
from chatops.channels.events import InboundMessage
from chatops.cli.app import app
from chatops.config.bot import load_bot
from chatops.db.connect import create_db_engine
from chatops.db.inbox import Conversation, PastTurn
from chatops.db.tables import conversations, turns
from chatops.engine.turn import BotRuntime, TurnResult, handle_turn
from chatops.engine.variables import VariableSource
from chatops.templating.providers import ProviderRunner, build_providers
from chatops.templating.store import TemplateStore
from tests.conftest import ROOT

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
PIZZA = ROOT / "examples" / "pizza"


# The pizza example through `chatops simulate` ----------------------------------------------------------------------


@pytest.fixture
def pizza(tmp_path: Path) -> Path:
    """A copy of examples/pizza in the test's directory (the cwd, where simulate looks for stages.yaml)."""
    shutil.copy(PIZZA / "stages.yaml", tmp_path / "stages.yaml")
    shutil.copytree(PIZZA / "templates", tmp_path / "templates")
    return tmp_path


@pytest.fixture
def simulate(database_url: str, pizza: Path) -> Any:
    runner = CliRunner()
    minute = iter(range(100))

    def run(*args: str) -> Result:
        at = f"2026-01-05T10:{next(minute):02d}"
        result = runner.invoke(app, ["--database-url", database_url, "simulate", *args, "--at", at])
        assert result.exit_code == 0, result.stderr
        return result

    return run


def rows(database_url: str, *columns: sa.Column[Any]) -> list[tuple[Any, ...]]:
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(sa.select(*columns).order_by(columns[0].table.c.id))]
    finally:
        engine.dispose()


def test_an_order_is_remembered_across_turns(simulate: Any, database_url: str) -> None:
    simulate("hi")
    assert simulate("2 diavola").stdout == (
        "Alex: 2 diavola\n"
        "Pizza Pronto: 2 × Diavola = 19.00 EUR. Shall we deliver it?\n"
        "  [Yes, deliver it] [No, cancel]\n"
        "  (--button yes | no)\n"
        "stage: menu → confirm\n"
        'state: pizza="Diavola", qty=2, total=19.0\n'
        "  set total; extracted pizza, qty\n"  # the regex set them, and the form's extraction agreed
    )
    assert simulate("--button", "yes").stdout == (
        "Alex: [button yes]\n"
        "Pizza Pronto: Where to? Please share your location.\n"
        "stage: confirm → address\n"
        'state: pizza="Diavola", qty=2, total=19.0\n'  # nothing changed: no second line
    )
    assert simulate("--location", "41.9,12.5").stdout == (
        "Alex: [location 41.9, 12.5]\n"
        "Pizza Pronto: Thank you! 2 × Diavola is on its way to 41.9000, 12.5000.\n"
        "stage: address → done → menu\n"
        'state: lat=41.9, lon=12.5, pizza="Diavola", place=null, qty=2, total=19.0\n'
        "  set lat, lon, place\n"
    )
    assert simulate("hello").stdout == (
        "Alex: hello\n"
        'Pizza Pronto: Your last order was 2 × Diavola. Write "again" to order it again, or a new order.\n'
        "stage: menu → last_order → menu\n"
        'state: lat=41.9, lon=12.5, pizza="Diavola", place=null, qty=2, total=19.0\n'
    )
    assert "2 × Diavola = 19.00 EUR" in simulate("again").stdout
    assert simulate("--button", "no").stdout.endswith(
        "stage: confirm → cancelled → menu\nstate: (empty)\n  cleared lat, lon, pizza, place, qty, total\n"
    )
    assert "We bake Margherita, Diavola, Funghi" in simulate("again").stdout  # cleared: nothing to repeat

    recorded = rows(database_url, turns.c.id, turns.c.stage_answered, turns.c.state_before, turns.c.state_after)
    order = {"qty": 2, "pizza": "Diavola", "total": 19.0}
    delivered = order | {"lat": 41.9, "lon": 12.5, "place": None}
    assert [row[1:] for row in recorded] == [
        ("welcome", {}, {}),
        ("confirm", {}, order),
        ("address", order, order),
        ("done", order, delivered),
        ("last_order", delivered, delivered),
        ("confirm", delivered, delivered),
        ("cancelled", delivered, {}),
        ("menu", {}, {}),
    ]
    assert rows(database_url, conversations.c.stage, conversations.c.state) == [("menu", {})]


def test_simulate_json_has_the_state_and_what_the_turn_changed(simulate: Any) -> None:
    simulate("hi")
    simulate("2 diavola")
    data = json.loads(simulate("--button", "no", "--json").stdout)
    order = {"qty": 2, "pizza": "Diavola", "total": 19.0}
    assert (data["state_before"], data["state_after"], data["state"]) == (order, {}, {})
    assert data["state_changes"] == {"set": [], "extracted": [], "cleared": ["pizza", "qty", "total"]}
    data = json.loads(simulate("3 pizza please", "--json").stdout)
    assert data["state"] == {"qty": 3}  # the form's own progress (_form) is left out
    assert data["state_changes"] == {"set": [], "extracted": ["qty"], "cleared": []}
    assert (data["extraction"]["proposed"], data["extraction"]["asked"]) == ({"qty": 3}, "pizza")


# Edge cases through handle_turn ------------------------------------------------------------------------------------

EDGES = """\
bot:
  name: Edges
  start: ask
  session_timeout: 1h
stages:
  ask:
    reply: ask.j2
    transitions:
      - when: {regex: '^note (?P<note>.*)$'}
        to: noted
        set: {note: match.note}
      - when: {regex: '^size (?P<size>\\w+)(?: (?P<extra>\\w+))?$'}
        to: noted
        set: {size: match.size, extra: match.extra}
      - when: {button: big}
        to: noted
        set: {size: message.button}
      - when: {if: "message.contacts"}
        to: noted
        set: {friend: "message.contacts[0].name", phone: "message.contacts[0].phones[0]"}
      - when: {keywords: [nan]}
        to: noted
        set: {ratio: "message.text | float"}
      - when: {keywords: [many]}
        to: noted
        set: {many: "range(600) | list"}
      - when: {keywords: [forget]}
        to: forget
  noted:
    reply: noted.j2
    on_error: sorry.j2
    next: ask
  forget:
    reply: noted.j2
    clear: [note]
    next: ask
"""
EDGE_TEMPLATES = {
    "ask.j2": "Tell me something.",
    "noted.j2": "{{ state | dictsort | map('join', '=') | join(', ') }}",
    "sorry.j2": "Sorry, I could not keep that.",
}


@pytest.fixture
def edges(tmp_path: Path) -> Iterator[BotRuntime]:
    folder = tmp_path / "edges"
    (folder / "templates").mkdir(parents=True)
    (folder / "stages.yaml").write_text(EDGES)
    for name, source in EDGE_TEMPLATES.items():
        (folder / "templates" / name).write_text(source)
    bot = load_bot(folder / "stages.yaml")
    templates = TemplateStore(bot.templates_dir)
    runner = ProviderRunner(build_providers(bot.providers, base_dir=folder))
    yield BotRuntime(bot, templates, VariableSource(bot, templates, runner), OfflineResponder())
    runner.close()


def message(text: str | None = None, *, kind: str = "text", **payload: Any) -> InboundMessage:
    return InboundMessage("whatsapp", "1065", "15550001111", "wamid.1", kind, NOW, text=text, payload=payload)


def turn(
    runtime: BotRuntime, state: dict[str, Any], inbound: InboundMessage, *, last_turn: datetime | None = None
) -> TurnResult:
    conversation = Conversation(
        id=1,
        channel="whatsapp",
        account_id="1065",
        user_id="15550001111",
        user_name="Ada",
        stage="ask",
        state=state,
        mode="bot",
        turn_count=1,
        session_started_at=NOW - timedelta(hours=3),
        last_inbound_at=NOW,
    )
    history = [PastTurn("earlier", ("reply",), last_turn)] if last_turn is not None else []
    return handle_turn(runtime, conversation, [inbound], history=history, now=NOW)


def test_regex_groups_are_kept_with_set_and_an_unmatched_group_is_null(edges: BotRuntime) -> None:
    result = turn(edges, {"extra": "old", "keep": 1}, message("size large"))
    after = {"extra": None, "keep": 1, "size": "large"}  # extra: an optional group that did not take part
    assert result.change.state == after
    assert result.replies[0].text == "extra=None, keep=1, size=large"
    assert result.record.state_before == {"extra": "old", "keep": 1}
    assert result.record.state_after == after


def test_buttons_and_contacts_are_captured(edges: BotRuntime) -> None:
    assert turn(edges, {}, message("Big", kind="button", button="big")).change.state == {"size": "big"}
    card = {"name": "Grace", "phones": ["+15550002222"], "emails": []}
    result = turn(edges, {}, message(kind="contacts", contacts=[card]))
    assert result.change.state == {"friend": "Grace", "phone": "+15550002222"}


def test_clear_forgets_the_listed_names(edges: BotRuntime) -> None:
    result = turn(edges, {"note": "x", "size": "big"}, message("forget"))
    assert result.change.state == {"size": "big"}


def test_a_session_timeout_starts_with_an_empty_state(edges: BotRuntime) -> None:
    result = turn(edges, {"size": "big"}, message("note hi"), last_turn=NOW - timedelta(hours=2))
    assert result.record.state_before == {}
    assert result.change.state == {"note": "hi"}  # `size` was forgotten with the old session
    kept = turn(edges, {"size": "big"}, message("note hi"), last_turn=NOW - timedelta(minutes=30))
    assert kept.change.state == {"size": "big", "note": "hi"}


def test_user_text_is_data_never_template_source(edges: BotRuntime) -> None:
    result = turn(edges, {}, message("note {{ 7 * 7 }} {% for x in range(9) %}"))
    assert result.change.state == {"note": "{{ 7 * 7 }} {% for x in range(9) %}"}
    assert result.replies[0].text == "note={{ 7 * 7 }} {% for x in range(9) %}"


def test_unstorable_characters_are_cleaned_before_they_are_kept(edges: BotRuntime) -> None:
    result = turn(edges, {}, message("note a\x00b\ud800c"))
    assert result.change.state == {"note": "a\ufffdb\ufffdc"}


@pytest.mark.parametrize(
    ("said", "where", "error"),
    [
        ("note " + "x" * 2500, "11:21", "set note: value is 2,502 characters as JSON; at most 2,000 are kept"),
        ("nan", "23:22", "set ratio: nan cannot be kept (JSON has no NaN or infinity)"),
        ("many", "26:21", "set many: value is 2,890 characters as JSON"),
    ],
)
def test_values_past_the_limits_fail_the_turn_and_keep_the_state(
    edges: BotRuntime, said: str, where: str, error: str
) -> None:
    result = turn(edges, {"size": "big"}, message(said))
    assert result.replies[0].text == "Sorry, I could not keep that."
    assert result.change.state == {"size": "big"}
    assert result.change.stage == "ask"
    assert result.record.error is not None
    assert result.record.error.startswith(f"StateError: edges/stages.yaml:{where}: ")
    assert error in result.record.error


def test_too_many_names_is_a_clear_error(edges: BotRuntime) -> None:
    full = {f"name{i}": i for i in range(64)}
    result = turn(edges, full, message("note one more"))
    assert result.change.state == full
    assert "the conversation would keep 65 names; at most 64 fit" in (result.record.error or "")


def test_the_order_form_asks_until_its_fields_are_valid(simulate: Any, database_url: str) -> None:
    simulate("hi")
    assert simulate("I'd like a pizza").stdout == (
        "Alex: I'd like a pizza\nPizza Pronto: How many pizzas would you like (1–20)?\nstage: menu → confirm\n"
    )
    assert simulate("25").stdout == (
        "Alex: 25\n"
        "Pizza Pronto: Sorry, qty should be less than or equal to 20. How many pizzas would you like (1–20)?\n"
        "stage: confirm → confirm\n"
    )
    assert simulate("3").stdout == (
        "Alex: 3\n"
        "Pizza Pronto: Which pizza would you like?\n"
        "  [Margherita] [Diavola] [Funghi]\n"
        "  (--button Margherita | Diavola | Funghi)\n"
        "stage: confirm → confirm\n"
        "state: qty=3\n"
        "  extracted qty\n"
    )
    assert "3 × Funghi = 27.00 EUR" in simulate("--button", "Funghi").stdout
    assert "2 × Funghi = 18.00 EUR" in simulate("make it 2").stdout  # the form reads corrections too

    [*_, asked, tapped, corrected] = rows(database_url, turns.c.id, turns.c.extraction)
    assert (asked[1]["proposed"], asked[1]["asked"]) == ({"qty": 3}, "pizza")
    assert asked[1]["request"][-1] == {"role": "user", "content": "3"}
    assert tapped[1]["proposed"] == {"pizza": "Funghi"}
    assert "request" not in tapped[1]  # a tap needs no AI
    assert corrected[1]["proposed"] == {"qty": 2}


# Forms through handle_turn: any order, the attempt limit, validation, and the real OpenAI SDK --------------------


@pytest.fixture
def pizza_runtime(pizza: Path) -> Iterator[BotRuntime]:
    yield from runtime_for(pizza / "stages.yaml", OfflineResponder())


def runtime_for(path: Path, ai: Any) -> Iterator[BotRuntime]:
    bot = load_bot(path)
    templates = TemplateStore(bot.templates_dir)
    runner = ProviderRunner(build_providers(bot.providers, base_dir=path.parent))
    yield BotRuntime(bot, templates, VariableSource(bot, templates, runner), ai)
    runner.close()


def talk(runtime: BotRuntime, stage: str, state: dict[str, Any], *said: str | InboundMessage) -> list[TurnResult]:
    """Send each message in turn, carrying stage and state over as the worker would."""
    results = []
    for item in said:
        inbound = message(item) if isinstance(item, str) else item
        conversation = Conversation(
            id=1,
            channel="whatsapp",
            account_id="1065",
            user_id="15550001111",
            user_name="Ada",
            stage=stage,
            state=state,
            mode="bot",
            turn_count=len(results),
            session_started_at=NOW,
            last_inbound_at=NOW,
        )
        result = handle_turn(runtime, conversation, [inbound], history=[], now=NOW)
        stage, state = result.change.stage or stage, result.change.state
        results.append(result)
    return results


def test_a_form_takes_its_fields_in_any_order(pizza_runtime: BotRuntime) -> None:
    *_, last = talk(pizza_runtime, "menu", {}, "an order please", "diavola", "2 please")
    assert last.replies[0].text == "2 × Diavola = 19.00 EUR. Shall we deliver it?"
    assert last.change.state == {"qty": 2, "pizza": "Diavola", "total": 19.0}
    first, second, _ = talk(pizza_runtime, "menu", {}, "an order please", "diavola", "2")
    assert first.replies[0].text == "How many pizzas would you like (1–20)?"
    assert first.change.state == {"_form": {"stage": "confirm", "asking": "qty", "attempts": 0}}
    assert second.replies[0].text == "How many pizzas would you like (1–20)?"
    assert second.change.state["pizza"] == "Diavola"


def test_after_max_attempts_the_form_follows_on_invalid(pizza_runtime: BotRuntime) -> None:
    results = talk(pizza_runtime, "menu", {}, "pizza!", "lots", "99", "zero")
    assert [r.record.stage_answered for r in results] == ["confirm", "confirm", "confirm", "start_over"]
    assert [r.record.extraction["attempts"] for r in results] == [0, 1, 2, 3]
    assert results[2].replies[0].text.startswith("Sorry, qty should be less than or equal to 20.")
    assert results[-1].replies[0].text.startswith("Let's start again.")
    assert results[-1].change.stage == "menu"
    assert results[-1].change.state == {}


@pytest.mark.parametrize(
    ("spec", "value", "expected"),
    [
        ({"type": "integer", "min": 1, "max": 20}, "3", (3, None)),
        (
            {"type": "integer", "min": 1, "max": 20},
            2.5,
            (None, "qty should be a valid integer, got a number with a fractional part"),
        ),
        ({"type": "number", "max": 5}, 7, (None, "qty should be less than or equal to 5")),
        ({"type": "boolean"}, "yes", (True, None)),
        ({"type": "enum", "choices": ["Small", "Large"]}, "large", ("Large", None)),
        ({"type": "enum", "choices": ["Small", "Large"]}, "huge", (None, "qty should be one of Small, Large")),
        ({"type": "date", "min": "2026-01-01"}, "2026-02-03", ("2026-02-03", None)),
        (
            {"type": "date", "min": "2026-01-01"},
            "2025-12-31",
            (None, "qty should be greater than or equal to 2026-01-01"),
        ),
        ({"type": "time", "min": "11:00", "max": "22:00"}, "19:30", ("19:30", None)),
        ({"type": "email"}, " ada@example.org ", ("ada@example.org", None)),
        ({"type": "email"}, "ada at example", (None, "qty is not an email address")),
        ({"type": "phone"}, "+39 06-1234 567", ("+39061234567", None)),
        ({"type": "string", "max": 5, "pattern": "^[A-Z]"}, "Hello", ("Hello", None)),
        ({"type": "string", "pattern": "^[A-Z]"}, "hello", (None, "qty does not have the expected form")),
    ],
)
def test_field_validation(spec: dict[str, Any], value: Any, expected: tuple[Any, str | None]) -> None:
    from chatops.config.memory_schema import ExtractField
    from chatops.engine.forms import validate

    assert validate("qty", ExtractField.model_validate(spec), value) == expected


def test_openai_extraction_uses_a_strict_schema_and_is_validated(pizza: Path) -> None:
    from chatops.ai.openai_client import OpenAIClient
    from tests.fakes.openai_server import FakeOpenAI, JSONReply

    with FakeOpenAI() as fake, OpenAIClient("sk-test", fake.base_url, max_retries=0) as client:
        runtime = next(runtime_for(pizza / "stages.yaml", client))
        fake.script(JSONReply({"qty": 40, "pizza": "diavola"}), JSONReply({"qty": 4, "pizza": None}))
        too_many, fixed = talk(runtime, "menu", {}, "a pizza order: forty diavola", "ok, four")
        runtime.variables.runner.close()

    assert too_many.replies[0].text == (
        "Sorry, qty should be less than or equal to 20. How many pizzas would you like (1–20)?"
    )
    assert too_many.change.state["pizza"] == "Diavola"  # the valid field is kept, the invalid one asked again
    assert too_many.record.extraction is not None
    assert too_many.record.extraction["raw"] == '{"qty": 40, "pizza": "diavola"}'
    assert too_many.record.extraction["errors"] == {"qty": "qty should be less than or equal to 20"}
    assert too_many.record.model == "gpt-4o-mini"
    assert fixed.replies[0].text == "4 × Diavola = 38.00 EUR. Shall we deliver it?"
    assert fixed.change.state == {"qty": 4, "pizza": "Diavola", "total": 38.0}

    first = fake.requests[0].body
    assert first["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "extracted_fields",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "qty": {
                        "type": ["integer", "null"],
                        "description": "qty: integer; at least 1; at most 20; how many pizzas",
                    },
                    "pizza": {
                        "type": ["string", "null"],
                        "description": "pizza: enum; one of Margherita, Diavola, Funghi; which pizza",
                        "enum": ["Margherita", "Diavola", "Funghi", None],
                    },
                },
                "required": ["qty", "pizza"],
                "additionalProperties": False,
            },
        },
    }
    assert first["messages"][-1] == {"role": "user", "content": "a pizza order: forty diavola"}
    assert "The assistant has just asked the user for: qty." in fake.requests[1].body["messages"][0]["content"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["hi", "2 diavola", "pizza", "again", "no", "25", "3", "make it 7", "hello", "yes"]),
            st.sampled_from(["Margherita", "Funghi", "yes", "no", "other"]).map(
                lambda b: message(b, kind="button", button=b)
            ),
            st.text(max_size=40),
        ),
        max_size=8,
    )
)
def test_random_conversations_never_fail_or_store_invalid_values(pizza_runtime: BotRuntime, said: list[Any]) -> None:
    for result in talk(pizza_runtime, "menu", {}, *said):
        assert result.record.error is None, result.record.error
        state = result.change.state
        assert set(state) <= {"qty", "pizza", "total", "lat", "lon", "place", "_form"}
        if "qty" in state:
            assert isinstance(state["qty"], int)
            assert 1 <= state["qty"] <= 20
        if "pizza" in state:
            assert state["pizza"] in ("Margherita", "Diavola", "Funghi")


class BrokenExtraction(OfflineResponder):
    """The offline responder, except that extraction raises (a bug, not an AIError): the worker retries, gives up."""

    def extract(self, request: Any, fields: Any, *, asking: str | None = None) -> Any:
        raise RuntimeError("extraction exploded")


def test_a_turn_the_worker_gives_up_on_keeps_and_records_the_state(
    pizza: Path, database_url: str, db: sa.Engine
) -> None:
    from chatops.config.settings import load_settings
    from chatops.engine.runtime import build_runtime
    from chatops.engine.worker import Worker
    from chatops.web.app import create_app
    from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text

    clock = [NOW]
    settings = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        ai="offline",
    )
    bot = load_bot(pizza / "stages.yaml")
    good = build_runtime(settings, bot)
    broken = BotRuntime(bot, good.templates, good.variables, BrokenExtraction())
    webhook = Webhook(create_app(settings, bot, db=db, clock=lambda: clock[0]).test_client())

    def send(text: str, runtime: BotRuntime) -> None:
        assert webhook.post(whatsapp_text(text, timestamp=int(clock[0].timestamp()))).status_code == 200
        worker = Worker(runtime, db, settings, clock=lambda: clock[0], name="w")
        for _ in range(settings.turn_max_attempts):
            worker.work_once()
            clock[0] += timedelta(seconds=30)  # past every backoff

    send("hi", good)
    send("2 diavola", good)
    order = {"qty": 2, "pizza": "Diavola", "total": 19.0}
    send("make it 3", broken)
    good.variables.runner.close()
    with db.connect() as connection:
        recorded = connection.execute(
            sa.select(turns.c.state_before, turns.c.state_after, turns.c.error).order_by(turns.c.id)
        ).all()
        kept = connection.execute(sa.select(conversations.c.stage, conversations.c.state)).one()
    assert recorded[-1].error == "RuntimeError: extraction exploded"
    assert (recorded[-1].state_before, recorded[-1].state_after) == (order, order)
    assert tuple(kept) == ("confirm", order)


# The example bot at the top of the repository: every path works offline, and it keeps an order number -------------


@pytest.fixture
def northwind(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_every_path_of_the_example_bot_works_offline(northwind: Path, database_url: str) -> None:
    runner = CliRunner()

    def say(*args: str) -> str:
        result = runner.invoke(app, ["--database-url", database_url, "simulate", *args, "--at", "2026-01-05T10:00"])
        assert result.exit_code == 0, result.stderr
        return result.stdout

    say("hi")
    assert say("where is nw-1234?") == (
        "Alex: where is nw-1234?\n"
        "Northwind Support: I can't find NW-1234; here is your latest order.\n"
        "  Your order NW-20417 is packed.\n"
        "  • 1 × Hiking boots\n"
        "  Total: 129.00 EUR\n"
        "  [Return this order] [Talk to a person]\n"
        "  (--button refund | human)\n"
        "stage: triage → tracking\n"
        'state: order_number="NW-1234"\n'
        "  set order_number\n"
    )
    assert "return order NW-20417 (129.00 EUR)" in say("--button", "refund")
    assert "stage: refund → triage" in say("--button", "refund_no")
    assert "stage: triage → store_hours → triage" in say("--button", "hours")
    assert "stage: triage → questions → triage" in say("what about gift cards?")
    # Another customer gets the demo order of the provider's `default`.
    other = say("--button", "track", "--from", "491700000")
    assert "stage: (new) → welcome → triage" in other
    tracked = say("--button", "track", "--from", "491700000")
    assert "Your order NW-10234 is on its way.\n  It should arrive on 2026-01-08." in tracked
    assert "Sorry" not in tracked
    assert "A colleague" in say("--button", "human")
    rows_ = rows(database_url, turns.c.id, turns.c.error)
    assert [error for _, error in rows_] == [None] * len(rows_)


def test_a_python_provider_is_imported_from_the_bot_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: a dotted path failed with 'cannot import' unless PYTHONPATH=. was set and the cwd was the bot's."""
    import sys

    monkeypatch.setattr(sys, "path", list(sys.path))
    folder = tmp_path / "bot"
    (folder / "templates").mkdir(parents=True)
    (folder / "pizzeria_memory_test").mkdir()
    (folder / "pizzeria_memory_test" / "__init__.py").write_text("")
    (folder / "pizzeria_memory_test" / "menu.py").write_text(
        "class Menu:\n"
        "    def __init__(self, spec):\n"
        "        self.name = spec.name\n"
        "    def fetch(self, context):\n"
        "        return {'special': 'Diavola'}\n"
    )
    (folder / "templates" / "hi.j2").write_text("Today: {{ menu.special }}")
    (folder / "stages.yaml").write_text(
        "bot: {name: P, start: hi}\n"
        "providers:\n  - {name: menu, use: 'pizzeria_memory_test.menu:Menu', provides: [special]}\n"
        "stages:\n  hi: {reply: hi.j2}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the bot's folder
    try:
        runtime = next(runtime_for(folder / "stages.yaml", OfflineResponder()))
        [result] = talk(runtime, "hi", {}, "hello")
        runtime.variables.runner.close()
        assert result.replies[0].text == "Today: Diavola"
    finally:
        for name in [m for m in sys.modules if m.startswith("pizzeria_memory_test")]:
            del sys.modules[name]
