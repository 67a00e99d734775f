"""Providers read the conversation's state: an order number the bot was told reaches an http API, a SQL query and a
Python provider, through ``chatops simulate`` (the real route, parser, inbox and worker) on SQLite and PostgreSQL;
lint checks the state those inputs read like it checks templates."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner, Result

from chatops.cli.app import app
from chatops.templating.lint import format_text, lint_bot
from chatops.templating.providers import ConfiguredProvider, ProviderRunner
from tests.providers import JsonApi, make_context

SHOP = """\
bot:
  name: Shop
  start: welcome
providers:
  - name: order
    use: http
    url: "{api}/orders/{{{{ state.order_no }}}}"
    provides: [status]
  - name: parcel
    use: sql
    database_url: sqlite:///shop.db
    query: SELECT carrier FROM parcels WHERE order_no = :order_no
    params: {{order_no: state.order_no}}
    provides: [carrier]
  - name: seen
    use: shop_state:SeenState
    provides: [names]
stages:
  welcome:
    reply: welcome.j2
    next: triage
  triage:
    reply: triage.j2
    transitions:
      - when: {{regex: '#(?P<order_no>\\d{{5}})'}}
        to: tracking
        set: {{order_no: match.order_no}}
      - when: {{keywords: [track]}}
        to: ask_number
  ask_number:
    clear: [order_no]
    extract:
      order_no: {{type: string, pattern: '^\\d{{5}}$', description: your order number}}
    ask: ask_number.j2
    reply: tracking.j2
    set: {{last_status: order.status}}
    next: triage
  tracking:
    reply: tracking.j2
    set: {{last_status: order.status}}
    next: triage
"""
TEMPLATES = {
    "welcome.j2": "Welcome!",
    "triage.j2": "Send #12345 to track an order{% if state.last_status is defined %} (last: {{ state.last_status }})"
    "{% endif %}.",
    "ask_number.j2": "Which order number?",
    "tracking.j2": "Order {{ state.order_no }} is {{ order.status }} with {{ parcel.carrier }}."
    " Providers saw: {{ seen.names | join(', ') }}.",
}
SEEN_STATE = """\
from collections.abc import Mapping
from typing import Any


class SeenState:
    provides = {"names": "the state names the provider was given"}

    def __init__(self, spec: Any) -> None:
        self.name = spec.name

    def fetch(self, context: Any) -> Mapping[str, Any]:
        try:
            context.state["order_no"] = "changed"  # read-only: providers of a turn share it
        except TypeError:
            pass
        return {"names": [f"{name}={value}" for name, value in sorted(context.state.items())]}
"""


def write_shop(folder: Path, api_url: str, *, stages: str = SHOP) -> Path:
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    (folder / "stages.yaml").write_text(stages.format(api=api_url))
    for name, source in TEMPLATES.items():
        (folder / "templates" / name).write_text(source)
    (folder / "shop_state.py").write_text(SEEN_STATE)
    with sqlite3.connect(folder / "shop.db") as connection:
        connection.execute("CREATE TABLE parcels (order_no TEXT, carrier TEXT)")
        connection.executemany("INSERT INTO parcels VALUES (?, ?)", [("12345", "DHL"), ("67890", "UPS")])
    connection.close()
    return folder / "stages.yaml"


@pytest.fixture
def shop(tmp_path: Path, api: JsonApi) -> Path:
    api.script["/orders/12345"] = [(200, {"status": "shipped"})]
    api.script["/orders/67890"] = [(200, {"status": "packed"})]
    return write_shop(tmp_path / "shop", api.url)


def simulator(database_url: str, stages: Path) -> Any:
    runner = CliRunner()
    minute = iter(range(100))

    def run(*args: str) -> Result:
        at = f"2026-01-05T10:{next(minute):02d}"
        result = runner.invoke(
            app, ["--database-url", database_url, "--stages", str(stages), "simulate", *args, "--at", at]
        )
        assert result.exit_code == 0, result.stderr
        return result

    return run


def reply_of(result: Result) -> str:
    return next(line for line in result.stdout.splitlines() if line.startswith("Shop: ")).removeprefix("Shop: ")


def test_providers_look_up_the_order_number_the_bot_was_told(
    database_url: str,
    shop: Path,
    api: JsonApi,
) -> None:
    simulate = simulator(database_url, shop)
    simulate("hi")
    # A regex transition's set: is in the state before the tracking stage's providers run; the stage's own set:
    # (last_status) runs after them, so they do not see it yet.
    assert reply_of(simulate("where is #12345?")) == ("Order 12345 is shipped with DHL. Providers saw: order_no=12345.")
    assert [request["path"] for request in api.requests] == ["/orders/12345"]
    # A form: while it asks, only the ask template's providers run (the reply's need the number it asks for) ...
    assert reply_of(simulate("track")) == "Which order number?"
    assert len(api.requests) == 1
    # ... and once the extracted field is valid, the providers read it.
    assert reply_of(simulate("67890")) == (
        "Order 67890 is packed with UPS. Providers saw: last_status=shipped, order_no=67890."
    )
    assert [request["path"] for request in api.requests] == ["/orders/12345", "/orders/67890"]
    assert reply_of(simulate("thanks")) == "Send #12345 to track an order (last: packed)."


def test_a_provider_input_reading_unset_state_fails_the_turn_into_on_error(
    database_url: str,
    tmp_path: Path,
    api: JsonApi,
) -> None:
    stages = SHOP.replace("        set: {{order_no: match.order_no}}\n", "").replace(
        "    set: {{last_status: order.status}}\n", "    set: {{last_status: order.status}}\n    on_error: sorry.j2\n"
    )
    path = write_shop(tmp_path / "shop", api.url, stages=stages)
    (path.parent / "templates" / "sorry.j2").write_text("Sorry, I could not look that order up.")
    simulate = simulator(database_url, path)
    simulate("hi")
    result = simulate("where is #12345?")
    assert reply_of(result) == "Sorry, I could not look that order up."
    assert "'state' has no attribute 'order_no'" in result.stdout
    assert api.requests == []


def test_the_default_cache_key_of_a_python_provider_includes_the_state() -> None:
    calls: list[dict[str, Any]] = []

    class Echo:
        name = "echo"
        provides: ClassVar[dict[str, str]] = {"order_no": ""}

        def fetch(self, context: Any) -> dict[str, Any]:
            calls.append(dict(context.state))
            return {"order_no": context.state.get("order_no")}

    provider = ConfiguredProvider(Echo(), "echo", {"order_no": ""}, timeout=2.0, cache_ttl=60.0)
    with ProviderRunner([provider], clock=lambda: 0.0) as runner:
        first = runner.fetch_variables(make_context(state={"order_no": "12345"}))
        again = runner.fetch_variables(make_context(state={"order_no": "12345"}))
        other = runner.fetch_variables(make_context(state={"order_no": "67890"}))
    assert [r.variables["echo"]["order_no"] for r in (first, again, other)] == ["12345", "12345", "67890"]
    assert again.cached == ["echo"]
    assert calls == [{"order_no": "12345"}, {"order_no": "67890"}]


# Lint ----------------------------------------------------------------------------------------------------------------


def lint(path: Path) -> list[str]:
    return format_text(lint_bot(path)).splitlines()


def findings(path: Path) -> list[str]:
    return [line for line in lint(path) if ": error " in line or ": warning " in line or ": note " in line]


def test_lint_accepts_state_in_provider_inputs_set_on_every_path(shop: Path) -> None:
    assert findings(shop) == []


def test_lint_warns_where_a_stage_running_the_provider_can_be_reached_without_the_name(tmp_path: Path) -> None:
    stages = SHOP.replace("        set: {{order_no: match.order_no}}\n", "")
    write_shop(tmp_path / "shop", "http://127.0.0.1:9", stages=stages)
    hint = (
        "e.g. on the path welcome → triage → tracking; set it on every path to the stage (a stage's own set: runs "
        "after its providers), or guard it: state.order_no | default(…)"
    )
    assert lint(Path("shop/stages.yaml"))[:6] == [
        f"shop/stages.yaml:7:46: warning W301 state.order_no may be unset when provider 'order' runs (stage tracking)"
        f" — {hint}",
        '        url: "http://127.0.0.1:9/orders/{{ state.order_no }}"',
        "                                                 ^^^^^^^^",
        f"shop/stages.yaml:13:30: warning W301 state.order_no may be unset when provider 'parcel' runs"
        f" (stage tracking) — {hint}",
        "        params: {order_no: state.order_no}",
        "                                 ^^^^^^^^",
    ]


def test_a_stages_own_set_comes_too_late_for_its_providers(tmp_path: Path) -> None:
    stages = SHOP.replace("        set: {{order_no: match.order_no}}\n", "").replace(
        "    set: {{last_status: order.status}}\n", "    set: {{order_no: \"'12345'\", last_status: order.status}}\n"
    )
    path = write_shop(tmp_path / "shop", "http://127.0.0.1:9", stages=stages)
    assert [line.split(" — ")[0].split(": ", 1)[1] for line in findings(path)] == [
        "warning W301 state.order_no may be unset when provider 'order' runs (stage tracking)",
        "warning W301 state.order_no may be unset when provider 'parcel' runs (stage tracking)",
    ]


def test_lint_reports_names_provider_inputs_and_window_params_cannot_read(tmp_path: Path) -> None:
    stages = SHOP.replace("{{{{ state.order_no }}}}", "{{{{ match.order_no }}}}").replace(
        "params: {{order_no: state.order_no}}", "params: {{order_no: state.order_nr}}"
    ) + ("whatsapp_template:\n  name: order_update\n  params: ['{{{{ state.order_no }}}}']\n")
    write_shop(tmp_path / "shop", "http://127.0.0.1:9", stages=stages)
    assert findings(Path("shop/stages.yaml")) == [
        "shop/stages.yaml:7:40: error E101 undefined variable 'match' (provider order) — provider inputs read state,"
        " not match: keep the group with set: on the transition (set: {x: match.x}) and read state.x",
        "shop/stages.yaml:13:30: error E102 state.order_nr is set nowhere (provider parcel) — did you mean 'order_no'?",
        "shop/stages.yaml:44:16: error E101 undefined variable 'state' (whatsapp_template) — whatsapp_template params"
        " see the built-ins and static variables only",
    ]


def test_simulate_json_shows_the_provider_request(database_url: str, shop: Path, api: JsonApi) -> None:
    simulate = simulator(database_url, shop)
    simulate("hi")
    trace = json.loads(simulate("#12345", "--json").stdout)
    assert trace["variables"]["order"] == {"status": "shipped"}
    assert trace["variables"]["state"] == {"order_no": "12345", "last_status": "shipped"}


def test_a_provider_only_a_stages_set_reads_is_fetched(database_url: str, tmp_path: Path, api: JsonApi) -> None:
    """Regression: a stage's set: could read a provider lint accepted there, but the engine fetched only the providers
    its reply or prompt named, so the set: failed into on_error."""
    api.script["/orders/12345"] = [(200, {"status": "shipped"})]
    path = write_shop(tmp_path / "shop", api.url)
    (path.parent / "templates" / "tracking.j2").write_text("Noted order {{ state.order_no }}.")
    simulate = simulator(database_url, path)
    simulate("hi")
    assert reply_of(simulate("#12345")) == "Noted order 12345."
    assert reply_of(simulate("thanks")) == "Send #12345 to track an order (last: shipped)."
    assert findings(path) == []


def test_lint_follows_a_provider_that_only_a_stages_set_reads(tmp_path: Path) -> None:
    stages = SHOP.replace("        set: {{order_no: match.order_no}}\n", "")
    path = write_shop(tmp_path / "shop", "http://127.0.0.1:9", stages=stages)
    (path.parent / "templates" / "tracking.j2").write_text("Noted.")
    (path.parent / "templates" / "ask_number.j2").write_text("Which order number?")
    found = [line.split(" — ")[0] for line in findings(path)]
    assert found == [  # tracking: its set: reads `order`; ask_number's form requires order_no, so it is set there
        "shop/stages.yaml:7:46: warning W301 state.order_no may be unset when provider 'order' runs (stage tracking)"
    ]
