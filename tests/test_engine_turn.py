"""handle_turn on a small bot: stages, conditions, providers, AI, errors, splitting — no database involved."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatops.ai.offline import OfflineResponder
from chatops.ai.openai_client import OpenAIClient
from chatops.ai.protocol import AIClient
from chatops.channels.events import InboundMessage
from chatops.config.bot import load_bot
from chatops.db.inbox import Conversation, PastTurn
from chatops.engine.turn import FALLBACK_ERROR_TEXT, BotRuntime, TurnResult, handle_turn
from chatops.engine.variables import VariableSource
from chatops.templating.providers import ProviderRunner, build_providers
from chatops.templating.store import TemplateStore
from tests.bots import write_bot
from tests.fakes.openai_server import FakeOpenAI, HTTPError, JSONReply

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class OrderAPI:
    """A loopback JSON API for the `order` provider: answers {"status": ...} or a scripted HTTP status."""

    def __init__(self) -> None:
        self.status_code = 200
        self.order_status = "shipped"
        self.paths: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.paths.append(self.path)
                body = json.dumps({"status": owner.order_status}).encode()
                self.send_response(owner.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/orders"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def order_api() -> Iterator[OrderAPI]:
    api = OrderAPI()
    yield api
    api.close()


def make_runtime(folder: Path, order_api: OrderAPI, ai: AIClient | None = None) -> BotRuntime:
    bot = load_bot(write_bot(folder, order_url=order_api.url))
    templates = TemplateStore(bot.templates_dir)
    runner = ProviderRunner(build_providers(bot.providers, base_dir=folder))
    return BotRuntime(bot, templates, VariableSource(bot, templates, runner), ai or OfflineResponder())


@pytest.fixture
def runtime(tmp_path: Path, order_api: OrderAPI) -> Iterator[BotRuntime]:
    runtime = make_runtime(tmp_path, order_api)
    yield runtime
    runtime.variables.runner.close()


def conversation(stage: str | None = None, *, channel: str = "whatsapp", mode: str = "bot") -> Conversation:
    return Conversation(
        id=1,
        channel=channel,
        account_id="106540352242922",
        user_id="15550001111",
        user_name="Ada",
        stage=stage,
        state={},
        mode=mode,
        turn_count=0,
        session_started_at=NOW - timedelta(minutes=5),
        last_inbound_at=NOW,
    )


def text(body: str, **payload: Any) -> InboundMessage:
    return InboundMessage(
        "whatsapp", "106540352242922", "15550001111", "wamid.1", "text", NOW, text=body, payload=payload
    )


def button(button_id: str) -> InboundMessage:
    return InboundMessage(
        "whatsapp",
        "106540352242922",
        "15550001111",
        "wamid.2",
        "button",
        NOW,
        text="title",
        payload={"button": button_id},
    )


def turn(runtime: BotRuntime, stage: str | None, message: InboundMessage, **options: Any) -> TurnResult:
    return handle_turn(runtime, conversation(stage), [message], history=options.pop("history", ()), now=NOW, **options)


def test_new_conversation_gets_the_start_stage_with_buttons(runtime: BotRuntime) -> None:
    result = turn(runtime, None, text("hello"))
    assert [r.text for r in result.replies] == ["Hi Ada! Welcome to Test Shop. You sent a text."]
    assert [b.id for b in result.replies[0].buttons] == ["track", "human"]
    assert result.change.stage == "menu"  # welcome has next: menu
    assert result.record.stage_answered == "welcome"
    assert result.record.stage_before is None
    assert result.record.template_versions == {"welcome.j2": runtime.templates.version("welcome.j2")}
    assert result.record.bot_version == runtime.bot.version


def test_button_goes_to_its_stage_and_fetches_the_provider(runtime: BotRuntime) -> None:
    result = turn(runtime, "menu", button("track"))
    assert [r.text for r in result.replies] == ["Your order is shipped."]
    assert result.change.stage == "menu"
    assert result.record.variables["order"] == {"status": "shipped"}


@pytest.mark.parametrize(
    ("said", "stage_text"),
    [("I want an AGENT please", "A person will answer"), ("where is ts-1234?", "Your order is shipped.")],
)
def test_keywords_and_regex(runtime: BotRuntime, said: str, stage_text: str) -> None:
    result = turn(runtime, "menu", text(said))
    assert result.replies[0].text.startswith(stage_text)


def test_handoff_stops_the_bot(runtime: BotRuntime) -> None:
    result = turn(runtime, "menu", text("human"))
    assert result.change.mode == "human"
    assert result.change.stage == "handoff"


def test_no_match_stays_and_the_ai_answers_with_user_text_separate(runtime: BotRuntime) -> None:
    result = turn(runtime, "menu", text("what is {{ 7*7 }}?"))
    assert result.change.stage == "menu"
    assert result.replies[0].text.startswith('[offline AI] You said: "what is {{ 7*7 }}?"')
    assert result.record.prompt == [
        {"role": "system", "content": "You are the assistant of Test Shop. Be brief."},
        {"role": "user", "content": "what is {{ 7*7 }}?"},
    ]


def test_intent_through_the_real_sdk(tmp_path: Path, order_api: OrderAPI) -> None:
    with FakeOpenAI() as fake:
        fake.script(JSONReply({"intent": "refund"}))
        runtime = make_runtime(tmp_path, order_api, OpenAIClient("sk-test", fake.base_url, max_retries=0))
        result = turn(runtime, "menu", text("I want my money back"))
    assert result.record.intent == "refund"
    assert result.replies[0].text == "Refunds take 5 days."
    schema = fake.requests[0].body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["intent"]["enum"] == ["refund", "none"]


def test_ai_failure_answers_on_error_and_stays(tmp_path: Path, order_api: OrderAPI) -> None:
    with FakeOpenAI() as fake:
        fake.script(*[HTTPError(500, "boom")] * 3)
        runtime = make_runtime(tmp_path, order_api, OpenAIClient("sk-test", fake.base_url, max_retries=0))
        result = turn(runtime, "menu", text("no keyword here"))
    assert [r.text for r in result.replies] == ["Sorry, we cannot look that up right now."]
    assert result.change.stage == "menu"
    assert result.record.error is not None
    assert "AIError" in result.record.error


def test_provider_failure_answers_on_error(runtime: BotRuntime, order_api: OrderAPI) -> None:
    order_api.status_code = 500
    result = turn(runtime, "menu", button("track"))
    assert [r.text for r in result.replies] == ["Sorry, we cannot look that up right now."]
    assert result.change.stage == "menu"
    assert result.record.error is not None
    assert "order" in result.record.error


def test_session_timeout_restarts_at_start(runtime: BotRuntime) -> None:
    old = PastTurn("hi", ("hello",), NOW - timedelta(hours=2))
    result = turn(runtime, "menu", text("human"), history=[old])
    assert result.replies[0].text.startswith("Hi Ada!")
    assert result.change.stage == "menu"
    assert result.change.session_started_at == NOW


def test_long_reply_is_split_within_limits(runtime: BotRuntime) -> None:
    result = turn(runtime, "menu", button("long"))
    assert len(result.replies) == 2  # max_replies
    assert all(len(r.text) <= 4096 for r in result.replies)
    assert result.replies[-1].text.endswith("…")


@pytest.mark.parametrize("kind", ["image", "location", "sticker", "unsupported", "contacts"])
def test_non_text_input_never_crashes(runtime: BotRuntime, kind: str) -> None:
    message = InboundMessage("whatsapp", "1", "15550001111", "wamid.x", kind, NOW, payload={"latitude": 1.5})  # type: ignore[arg-type]
    result = turn(runtime, None, message)
    assert result.replies[0].text.endswith(f"You sent a {kind}.")
    result = turn(runtime, "menu", message)
    assert result.record.error is None
    assert result.replies


def test_template_error_falls_back_to_a_fixed_apology(tmp_path: Path, order_api: OrderAPI) -> None:
    runtime = make_runtime(tmp_path, order_api)
    (tmp_path / "templates" / "refund.j2").write_text("{{ undefined_thing.x }}")
    result = turn(runtime, "refund", text("anything"))  # refund has no transitions: it answers again
    assert [r.text for r in result.replies] == [FALLBACK_ERROR_TEXT]
    assert result.record.error is not None
    assert "undefined_thing" in result.record.error


MESSAGES = st.one_of(
    st.builds(text, st.sampled_from(["hi", "agent", "TS-1", "refund please", "", "{{ x }}", "long"])),
    st.builds(button, st.sampled_from(["track", "human", "long", "nope"])),
    st.builds(
        lambda kind: InboundMessage("whatsapp", "1", "2", "w", kind, NOW),
        st.sampled_from(["image", "location", "reaction", "unsupported"]),
    ),
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(MESSAGES, min_size=1, max_size=12))
def test_any_sequence_stays_in_a_defined_stage(runtime: BotRuntime, messages: list[InboundMessage]) -> None:
    stage: str | None = None
    for message in messages:
        result = turn(runtime, stage, message)
        stage = result.change.stage
        assert stage in runtime.bot.stages
        assert len(result.replies) <= runtime.bot.bot.max_replies
        if result.change.mode == "human":
            break


PRIVACY_STAGES = """\
bot: {{name: Privacy, start: ask}}
providers:
  - {{name: order, use: http, url: "{order_url}?customer={{{{ user.id }}}}", provides: [status], timeout: 1s}}
stages:
  ask:
    prompt: ask.j2
    providers: [order]
    transitions:
      - when: {{keywords: [confirm]}}
        to: confirm
  confirm:
    reply: confirm.j2
    reveal_phone: true
    next: ask
"""


def test_templates_and_the_ai_see_the_whatsapp_number_masked_unless_the_stage_reveals_it(
    tmp_path: Path, order_api: OrderAPI
) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "ask.j2").write_text(
        "Customer {{ user.id }} ({{ user.phone }}), order {{ order.status }}"
    )
    (tmp_path / "templates" / "confirm.j2").write_text("We will call {{ user.phone }}.")
    (tmp_path / "stages.yaml").write_text(PRIVACY_STAGES.format(order_url=order_api.url))
    bot = load_bot(tmp_path / "stages.yaml")
    templates = TemplateStore(bot.templates_dir)
    runner = ProviderRunner(build_providers(bot.providers, base_dir=tmp_path))
    runtime = BotRuntime(bot, templates, VariableSource(bot, templates, runner), OfflineResponder())
    try:
        asked = turn(runtime, "ask", text("where is my parcel?"))
        confirmed = turn(runtime, "ask", text("confirm"))
    finally:
        runner.close()

    assert asked.record.prompt[0]["content"] == "Customer •••••••1111 (•••••••1111), order shipped"
    assert asked.record.variables["user"]["id"] == "•••••••1111"
    assert "15550001111" not in json.dumps(asked.record.variables) + json.dumps(asked.record.prompt)
    assert order_api.paths == ["/orders?customer=15550001111"]  # the bot's own order API gets the number
    assert [r.text for r in confirmed.replies] == ["We will call 15550001111."]
