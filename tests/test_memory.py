"""Conversation memory: regex capture, set:, clear:, state conditions, the session timeout and the size limits.

The pizza example (examples/pizza) runs through ``chatops simulate`` (the real route, parser, inbox and worker) on
SQLite and PostgreSQL; the edge cases run through ``handle_turn`` on small bots written here.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
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
    )
    assert simulate("--button", "yes").stdout == (
        "Alex: [button yes]\nPizza Pronto: Where to? Please share your location.\nstage: confirm → address\n"
    )
    assert simulate("--location", "41.9,12.5").stdout == (
        "Alex: [location 41.9, 12.5]\n"
        "Pizza Pronto: Thank you! 2 × Diavola is on its way to your location.\n"
        "stage: address → done → menu\n"
    )
    assert simulate("hello").stdout == (
        "Alex: hello\n"
        'Pizza Pronto: Your last order was 2 × Diavola. Write "again" to order it again, or a new order.\n'
        "stage: menu → last_order → menu\n"
    )
    assert "2 × Diavola = 19.00 EUR" in simulate("again").stdout
    assert "the order is cancelled" in simulate("--button", "no").stdout
    assert "We bake Margherita, Diavola, Funghi" in simulate("again").stdout  # cleared: nothing to repeat

    recorded = rows(database_url, turns.c.id, turns.c.stage_answered, turns.c.state_before, turns.c.state_after)
    order = {"qty": 2, "pizza": "Diavola", "total": 19.0}
    delivered = order | {"lat": 41.9, "lon": 12.5}
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


def test_regex_groups_are_kept_with_set_and_an_unmatched_group_forgets(edges: BotRuntime) -> None:
    result = turn(edges, {"extra": "old", "keep": 1}, message("size large"))
    assert result.change.state == {"keep": 1, "size": "large"}  # extra: an optional group that did not match
    assert result.replies[0].text == "keep=1, size=large"
    assert result.record.state_before == {"extra": "old", "keep": 1}
    assert result.record.state_after == {"keep": 1, "size": "large"}


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
