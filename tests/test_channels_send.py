"""Outbound: request bodies for every message shape, and GraphClient against the loopback fake Graph API."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatops.channels import (
    Button,
    GraphClient,
    OutboundMessage,
    is_token_error,
    is_transient,
    messenger_request,
    whatsapp_request,
)
from chatops.config.settings import Settings
from chatops.errors import ChannelError, GraphAPIError
from tests.conftest import MetaFixtures
from tests.fakes.graph_api import FakeGraphAPI, Reply

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "EAAG-secret-token"
PHONE_ID = "106540352242922"


def buttons(n: int) -> tuple[Button, ...]:
    return tuple(Button(f"b{i}", f"Choice {i}") for i in range(n))


# -- WhatsApp bodies -------------------------------------------------------------------------------------------


def test_whatsapp_text_has_link_previews_off() -> None:
    assert whatsapp_request("491701234567", OutboundMessage(text="Hello https://example.org")) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "491701234567",
        "type": "text",
        "text": {"preview_url": False, "body": "Hello https://example.org"},
    }


def test_whatsapp_reply_to_sets_context() -> None:
    body = whatsapp_request("4917", OutboundMessage(text="Yes", reply_to="wamid.in1"))
    assert body["context"] == {"message_id": "wamid.in1"}


def test_whatsapp_up_to_three_buttons_are_reply_buttons_with_clipped_titles() -> None:
    message = OutboundMessage(
        text="How can we help?",
        buttons=(Button("track", "Track my order"), Button("human", "Talk to a real person, please")),
    )
    body = whatsapp_request("4917", message)
    assert body["type"] == "interactive"
    assert body["interactive"] == {
        "type": "button",
        "body": {"text": "How can we help?"},
        "action": {
            "buttons": [
                {"type": "reply", "reply": {"id": "track", "title": "Track my order"}},
                {"type": "reply", "reply": {"id": "human", "title": "Talk to a real pers…"}},
            ]
        },
    }
    assert len(body["interactive"]["action"]["buttons"][1]["reply"]["title"]) == 20
    assert (
        len(whatsapp_request("4917", OutboundMessage(text="x", buttons=buttons(3)))["interactive"]["action"]["buttons"])
        == 3
    )


def test_whatsapp_four_to_ten_buttons_are_a_list() -> None:
    four = whatsapp_request("4917", OutboundMessage(text="Pick one", buttons=buttons(4)))
    assert four["interactive"]["type"] == "list"
    assert four["interactive"]["action"]["button"] == "Choose"
    assert four["interactive"]["action"]["sections"] == [
        {"rows": [{"id": f"b{i}", "title": f"Choice {i}"} for i in range(4)]}
    ]
    rows = (Button("express", "Priority Mail Express", "Next Day to 2 Days"), *buttons(9))
    ten = whatsapp_request("4917", OutboundMessage(text="Shipping?", buttons=rows, list_button="Shipping options"))
    action = ten["interactive"]["action"]
    assert action["button"] == "Shipping options"
    assert action["sections"][0]["rows"][0] == {
        "id": "express",
        "title": "Priority Mail Express",
        "description": "Next Day to 2 Days",
    }
    assert len(action["sections"][0]["rows"]) == 10


def test_whatsapp_more_than_ten_buttons_is_refused() -> None:
    with pytest.raises(ChannelError, match="at most 10 choices, got 11"):
        whatsapp_request("4917", OutboundMessage(text="Too many", buttons=buttons(11)))


def test_whatsapp_template_with_body_parameters() -> None:
    message = OutboundMessage(
        kind="template", template_name="order_update", template_language="de_DE", template_params=("Ada", "A-17")
    )
    assert whatsapp_request("4917", message) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "4917",
        "type": "template",
        "template": {
            "name": "order_update",
            "language": {"code": "de_DE"},
            "components": [
                {"type": "body", "parameters": [{"type": "text", "text": "Ada"}, {"type": "text", "text": "A-17"}]}
            ],
        },
    }
    plain = whatsapp_request("4917", OutboundMessage(kind="template", template_name="hello_world"))
    assert plain["template"] == {"name": "hello_world", "language": {"code": "en_US"}}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (OutboundMessage(kind="template"), "needs template_name"),
        (OutboundMessage(text="   "), "empty WhatsApp message"),
        (OutboundMessage(text="", buttons=buttons(2)), "empty WhatsApp message"),
    ],
)
def test_whatsapp_refuses_what_meta_would_refuse(message: OutboundMessage, error: str) -> None:
    with pytest.raises(ChannelError, match=error):
        whatsapp_request("4917", message)


def test_whatsapp_long_text_is_clipped_to_the_limit() -> None:
    body = whatsapp_request("4917", OutboundMessage(text="a" * 5000))
    assert len(body["text"]["body"]) == 4096
    assert body["text"]["body"].endswith("…")


# -- Messenger bodies ------------------------------------------------------------------------------------------


def test_messenger_text_is_a_response() -> None:
    assert messenger_request("1739141089378194", OutboundMessage(text="Hi!")) == {
        "recipient": {"id": "1739141089378194"},
        "messaging_type": "RESPONSE",
        "message": {"text": "Hi!"},
    }


def test_messenger_buttons_are_text_quick_replies() -> None:
    body = messenger_request(
        "1739", OutboundMessage(text="Pick", buttons=(Button("track", "Track my order please!"), *buttons(12)))
    )
    replies = body["message"]["quick_replies"]
    assert len(replies) == 13
    assert replies[0] == {"content_type": "text", "title": "Track my order plea…", "payload": "track"}


@pytest.mark.parametrize(
    ("message", "error"),
    [
        (OutboundMessage(text="x", buttons=buttons(14)), "at most 13 quick replies, got 14"),
        (OutboundMessage(kind="template", template_name="hello_world"), "cannot send WhatsApp templates"),
        (OutboundMessage(text=""), "empty Messenger message"),
    ],
)
def test_messenger_refuses_what_meta_would_refuse(message: OutboundMessage, error: str) -> None:
    with pytest.raises(ChannelError, match=error):
        messenger_request("1739", message)


# -- GraphClient against the fake ------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


@pytest.fixture
def graph(fake: FakeGraphAPI) -> Iterator[GraphClient]:
    with httpx.Client() as http:
        yield GraphClient(http, base_url=fake.graph_api_url, timeout=2.0)


def test_send_whatsapp_posts_the_body_with_a_bearer_token(fake: FakeGraphAPI, graph: GraphClient) -> None:
    body = whatsapp_request("16505551234", OutboundMessage(text="Hello"))
    first = graph.send_whatsapp(PHONE_ID, TOKEN, body)
    second = graph.send_whatsapp(PHONE_ID, TOKEN, body)
    assert first.startswith("wamid.")
    assert first != second
    request = fake.requests[0]
    assert (request.method, request.path, request.query) == ("POST", f"/{PHONE_ID}/messages", {})
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.body == body


def test_mark_whatsapp_read_sends_the_read_status(fake: FakeGraphAPI, graph: GraphClient) -> None:
    graph.mark_whatsapp_read(PHONE_ID, TOKEN, "wamid.in1")
    graph.mark_whatsapp_read(PHONE_ID, TOKEN, "wamid.in2", typing=True)
    assert [r.body for r in fake.requests] == [
        {"messaging_product": "whatsapp", "status": "read", "message_id": "wamid.in1"},
        {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": "wamid.in2",
            "typing_indicator": {"type": "text"},
        },
    ]


def test_send_messenger_sends_the_page_token_in_a_header_not_the_url(
    fake: FakeGraphAPI, graph: GraphClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="httpx")  # httpx logs every request URL at INFO, httpcore more at DEBUG
    body = messenger_request("1739141089378194", OutboundMessage(text="Hi"))
    mid = graph.send_messenger(TOKEN, body)
    graph.messenger_sender_action(TOKEN, "1739141089378194", "typing_on")
    assert mid.startswith("m_")
    send, action = fake.requests
    assert (send.path, send.query, send.body) == ("/me/messages", {}, body)
    assert send.headers["authorization"] == f"Bearer {TOKEN}"
    assert action.body == {"recipient": {"id": "1739141089378194"}, "sender_action": "typing_on"}
    assert action.headers["authorization"] == f"Bearer {TOKEN}"
    assert caplog.records, "httpx logged nothing: the check below would prove nothing"
    assert TOKEN not in caplog.text


def test_from_settings_uses_graph_api_url_and_timeout(fake: FakeGraphAPI) -> None:
    settings = Settings(graph_api_url=fake.graph_api_url + "/", graph_timeout=0.3)
    fake.script(Reply.delayed(1.0))
    with httpx.Client() as http:
        graph = GraphClient.from_settings(settings, http)
        with pytest.raises(GraphAPIError, match=r"timed out after 0\.3s"):
            graph.send_messenger(TOKEN, {"recipient": {"id": "1"}, "message": {"text": "x"}})


@pytest.mark.parametrize(
    ("reply", "code", "status", "transient"),
    [
        (Reply.error(130429, message="(#130429) Rate limit hit", retry_after=7), 130429, 400, True),
        (Reply.error(131047, message="(#131047) Re-engagement message"), 131047, 400, False),
        (Reply.error(190, status=401, subcode=463, message="Error validating access token"), 190, 401, False),
        (Reply.error(551, message="(#551) This person isn't available right now."), 551, 400, False),
        (Reply.error(10, status=403, subcode=2018278), 10, 403, False),
        (Reply.error(131000, status=500), 131000, 500, True),
        (Reply.error(1, status=500, message="An unknown error occurred"), 1, 500, True),
        (Reply.error(368, status=400), 368, 400, False),  # any other 4xx is permanent
    ],
)
def test_graph_errors_are_classified(
    fake: FakeGraphAPI, graph: GraphClient, reply: Reply, code: int, status: int, transient: bool
) -> None:
    fake.script(reply)
    with pytest.raises(GraphAPIError) as caught:
        graph.send_whatsapp(PHONE_ID, TOKEN, whatsapp_request("4917", OutboundMessage(text="x")))
    error = caught.value
    assert (error.code, error.status, error.transient) == (code, status, transient)
    assert error.subcode == reply.error_subcode
    assert reply.message in error.message
    assert f"HTTP {status}" in error.message
    assert is_token_error(error) is (code == 190)
    assert error.retry_after == (7.0 if code == 130429 else None)


def test_the_real_551_body_is_permanent(fake: FakeGraphAPI, graph: GraphClient, meta_fixture: MetaFixtures) -> None:
    error = json.loads(meta_fixture.bytes("ms_send_api_error_551"))["error"]
    fake.script(Reply.error(error["code"], message=error["message"]))
    with pytest.raises(GraphAPIError, match="This person isn't available") as caught:
        graph.send_messenger(TOKEN, messenger_request("1739", OutboundMessage(text="x")))
    assert (caught.value.code, caught.value.transient) == (551, False)


def test_an_expired_token_is_a_token_error_and_never_printed() -> None:
    with FakeGraphAPI(token="the-current-token") as fake, httpx.Client() as http:
        graph = GraphClient(http, base_url=fake.graph_api_url)
        with pytest.raises(GraphAPIError) as caught:
            graph.send_messenger(TOKEN, messenger_request("1739", OutboundMessage(text="x")))
    assert is_token_error(caught.value)
    assert caught.value.transient is False
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("reply", [Reply.delayed(1.5), Reply.dropped()], ids=["timeout", "dropped"])
def test_transport_failures_are_transient_without_code_or_token(fake: FakeGraphAPI, reply: Reply) -> None:
    fake.script(reply)
    with httpx.Client() as http:
        graph = GraphClient(http, base_url=fake.graph_api_url, timeout=0.3)
        with pytest.raises(GraphAPIError) as caught:
            graph.send_messenger(TOKEN, messenger_request("1739", OutboundMessage(text="x")))
        error = caught.value
        assert (error.code, error.status, error.transient) == (None, None, True)
        assert TOKEN not in str(error)
        assert error.__cause__ is None  # httpx's exception names the URL, which carries the token
        assert graph.send_messenger(TOKEN, messenger_request("1739", OutboundMessage(text="x"))).startswith("m_")


def test_a_non_json_5xx_from_a_proxy_is_transient() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    with httpx.Client(transport=transport) as http, pytest.raises(GraphAPIError, match="HTTP 502") as caught:
        GraphClient(http).send_whatsapp(PHONE_ID, TOKEN, {})
    assert (caught.value.code, caught.value.status, caught.value.transient) == (None, 502, True)


def test_a_success_without_an_id_is_a_permanent_error() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"messages": []}))
    with httpx.Client(transport=transport) as http, pytest.raises(GraphAPIError, match=r"messages\[0\]\.id") as caught:
        GraphClient(http).send_whatsapp(PHONE_ID, TOKEN, {})
    assert caught.value.transient is False


@pytest.mark.parametrize(
    ("status", "code", "subcode", "transient"),
    [
        *[(400, code, None, True) for code in (130429, 131056, 4, 80007, 131000, 131016, 131057, 2, 1200)],
        *[(400, code, None, False) for code in (131047, 131026, 100, 551, 10, 190)],
        (500, 100, None, False),  # a known permanent code wins over the status
        (400, None, 2018278, False),
        (503, None, None, True),
        (429, None, None, True),
        (404, None, None, False),
        (None, None, None, True),  # no response at all
    ],
)
def test_is_transient(status: int | None, code: int | None, subcode: int | None, transient: bool) -> None:
    assert is_transient(status=status, code=code, subcode=subcode) is transient


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_fake_runs_standalone() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.graph_api", "--port", str(port), "--latency-ms", "5"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert f"CHATOPS_GRAPH_API_URL=http://127.0.0.1:{port}/v25.0" in process.stdout.readline()
        with httpx.Client() as http:
            graph = GraphClient(http, base_url=f"http://127.0.0.1:{port}/v25.0")
            started = time.monotonic()
            wamid = graph.send_whatsapp(PHONE_ID, TOKEN, whatsapp_request("4917", OutboundMessage(text="x")))
            assert wamid.startswith("wamid.")
            assert time.monotonic() - started >= 0.005
    finally:
        process.terminate()
        process.wait(timeout=5)
        assert process.stdout is not None
        process.stdout.close()
