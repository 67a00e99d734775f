"""Property-based fuzzing of the webhook routes: real Flask route, real signature check, real database.

Hypothesis builds WhatsApp and Messenger webhooks from the real payloads in tests/fixtures/meta: unchanged,
mutated (any value of the tree replaced by a hostile string or number, keys dropped or added, containers
swapped) and broken (cut short, not JSON, not an object), every one correctly signed. What must hold:

- the answer is never 500 (nor 503: the database is up);
- 200 means every message the parser accepted is stored (the answer's counts add up, and the rows exist);
- 4xx means nothing was stored, and the body is the one JSON error shape;
- the server keeps serving: a good message posted after each example is stored.

Two profiles (``CHATOPS_FUZZ``): ``ci`` (the default, a few seconds per database) and ``long`` (``make fuzz``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatops.channels import parse_webhook
from chatops.channels.events import Channel, InboundMessage
from chatops.config.settings import load_settings
from chatops.db.tables import conversations, inbound_messages
from chatops.web.app import create_app
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook, whatsapp_text

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "meta"
BODY_LIMIT = 1024 * 1024  # a smaller body limit than the default keeps huge examples quick; 413 past it

settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("long", parent=settings.get_profile("ci"), max_examples=5000)
PROFILE = settings.get_profile(os.environ.get("CHATOPS_FUZZ", "ci"))


def _fixtures(prefix: str) -> list[dict[str, Any]]:
    names = sorted(p for p in FIXTURES.glob(f"{prefix}*.json") if "send_api" not in p.name)
    return [json.loads(p.read_bytes()) for p in names]


WHATSAPP = _fixtures("wa_")
MESSENGER = _fixtures("ms_")


# Hostile values ----------------------------------------------------------------------------------------------

# Text the database cannot hold as it is, text that looks like something else, and escapes.
SPECIAL = ["\ud800", chr(0xDFFF), "\udbff\udfff", "\x00", "\ufeff", "\ufffd", "😀", "\\u0000", '"', "\\", "\n", "é"]
# JSON number literals Python reads but no database holds (or that are not JSON at all): spliced in raw.
RAW_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400", "-1e400", "9" * 5000, "-" + "9" * 4400, "1e-400", "-0"]


class Raw:
    """A JSON literal written into the body as it is (json.dumps cannot write a 5,000-digit integer)."""

    def __init__(self, literal: str) -> None:
        self.literal = literal
        self.marker = f"RAW-{uuid.uuid4().hex}"


texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(SPECIAL), st.text(max_size=5)), max_size=8).map("".join),
    st.text(st.characters(codec=None, categories=["Cs", "Cc"]), max_size=10),  # surrogates, controls, NUL
    st.builds(lambda s, n: s * n, st.sampled_from(["x", "\ud800", "é", "\x00"]), st.integers(100, 200_000)),
)
numbers = st.one_of(
    st.integers(),
    st.integers(-(10**400), 10**400),
    st.sampled_from([10**400, -(10**400), 2**63, 2**31, -1, 0, 10**18, 10**4000]),
    st.floats(),  # NaN and infinities included: json.dumps writes them as NaN/Infinity
    st.sampled_from(RAW_NUMBERS).map(Raw),
)
scalars = st.one_of(texts, numbers, st.booleans(), st.none())
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(texts, inner, max_size=3)),
    max_leaves=6,
)


def paths(tree: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path (keys and indexes) in a JSON tree, the root excluded."""
    if isinstance(tree, dict):
        items: Any = tree.items()
    elif isinstance(tree, list):
        items = enumerate(tree)
    else:
        return
    for key, child in items:
        yield (*prefix, key)
        yield from paths(child, (*prefix, key))


def mutate(tree: Any, path: tuple[Any, ...], action: str, value: Any) -> None:
    """Replace, drop or add at ``path`` (in place)."""
    *parents, last = path
    node = tree
    for key in parents:
        node = node[key]
    if action == "replace":
        node[last] = value
    elif action == "drop":
        del node[last]
    elif action == "add" and isinstance(node, dict):
        node[f"{last}{value!s:.10}"] = value
    elif action == "add":
        node.append(value)


def encode(tree: Any, *, ascii_only: bool) -> bytes:
    """The body Meta would send, hostile literals spliced in; lone surrogates go out as UTF-8 bytes when not
    escaped (surrogatepass), which is not valid UTF-8."""
    raws: list[Raw] = []

    def default(value: Any) -> Any:
        if isinstance(value, Raw):
            raws.append(value)
            return value.marker
        raise TypeError(type(value).__name__)

    text = json.dumps(tree, ensure_ascii=ascii_only, default=default)
    for raw in raws:
        text = text.replace(f'"{raw.marker}"', raw.literal)
    return text.encode("utf-8", "surrogatepass")


@st.composite
def webhooks(draw: st.DrawFn, fixtures: list[dict[str, Any]]) -> bytes:
    tree = json.loads(json.dumps(draw(st.sampled_from(fixtures))))
    shape = draw(st.sampled_from(["valid", "mutated", "mutated", "mutated", "broken"]))
    if shape != "valid":
        for _ in range(draw(st.integers(1, 4))):
            every = list(paths(tree))
            if not every:
                break
            path = draw(st.sampled_from(every))
            mutate(tree, path, draw(st.sampled_from(["replace", "replace", "drop", "add"])), draw(values))
    body = encode(tree, ascii_only=draw(st.booleans()))
    if shape == "broken":
        body = draw(
            st.one_of(
                st.integers(0, len(body)).map(lambda n: body[:n]),
                st.binary(max_size=200),
                st.builds(lambda v: encode(v, ascii_only=True), values),  # JSON, but maybe not an object
            )
        )
    return body


# The property ------------------------------------------------------------------------------------------------


@pytest.fixture
def app(database_url: str, db: sa.Engine) -> Flask:
    settings_ = load_settings(
        database_url=database_url,
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
        messenger_app_secret=APP_SECRET,
        messenger_verify_token=VERIFY_TOKEN,
        messenger_page_token=ACCESS_TOKEN,
        max_body_bytes=BODY_LIMIT,
    )
    return create_app(settings_, None, db=db, clock=lambda: NOW)


def counts(db: sa.Engine) -> tuple[int, int]:
    with db.connect() as connection:
        messages = connection.execute(sa.select(sa.func.count()).select_from(inbound_messages)).scalar_one()
        users = connection.execute(sa.select(sa.func.count()).select_from(conversations)).scalar_one()
    return int(messages), int(users)


def stored_ids(db: sa.Engine, ids: set[str]) -> set[str]:
    m = inbound_messages.c
    with db.connect() as connection:
        return set(connection.execute(sa.select(m.provider_message_id).where(m.provider_message_id.in_(ids))).scalars())


def check(app: Flask, db: sa.Engine, channel: Channel, body: bytes) -> None:
    webhook = Webhook(app.test_client())
    before = counts(db)
    response = webhook.post(body, channel=channel)
    status = response.status_code
    assert status == 200 or 400 <= status < 500, (status, response.text[:500])
    if status == 200:
        answer = response.json
        assert answer is not None
        messages = [e for e in parse_webhook(channel, body) if isinstance(e, InboundMessage)]
        assert answer["stored"] + answer["duplicates"] == len(messages)
        assert counts(db)[0] == before[0] + answer["stored"]
        ids = {m.provider_message_id for m in messages}
        assert stored_ids(db, ids) == ids
    else:
        assert response.json is not None
        assert set(response.json["error"]) == {"code", "message", "hint"}
        assert counts(db) == before, "a refused webhook stored something"
    # The server keeps serving.
    good = whatsapp_text("still here", message_id=f"wamid.ALIVE-{uuid.uuid4().hex}")
    assert webhook.post(good).json == {"stored": 1, "duplicates": 0, "statuses": 0}


@settings(PROFILE)
@given(body=webhooks(WHATSAPP))
def test_whatsapp_webhooks_are_stored_or_refused_never_a_500(app: Flask, db: sa.Engine, body: bytes) -> None:
    check(app, db, "whatsapp", body)


@settings(PROFILE)
@given(body=webhooks(MESSENGER))
def test_messenger_webhooks_are_stored_or_refused_never_a_500(app: Flask, db: sa.Engine, body: bytes) -> None:
    check(app, db, "messenger", body)


def test_every_fixture_is_valid_as_the_fuzzer_encodes_it(app: Flask, db: sa.Engine) -> None:
    # The "valid" shape must really be valid, or the property above would prove little about good webhooks.
    for channel, fixtures in (("whatsapp", WHATSAPP), ("messenger", MESSENGER)):
        for tree in fixtures:
            for ascii_only in (True, False):
                response = Webhook(app.test_client()).post(encode(tree, ascii_only=ascii_only), channel=channel)
                assert response.status_code == 200, (channel, tree, response.json)
