"""Variable providers: built-ins, http against a loopback JSON API, sql on a SQLite file, lookup tables, Python
providers by dotted path and entry point, and the runner's timeouts, failures and TTL cache."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from chatops.channels.events import InboundMessage
from chatops.channels.messenger import parse_messenger
from chatops.channels.whatsapp import parse_whatsapp
from chatops.db.connect import parse_database_url
from chatops.errors import BotDefinitionError, ProviderError
from chatops.templating.builtin import mask_phone, message_variables
from chatops.templating.providers import (
    ConfiguredProvider,
    FetchResult,
    ProviderContext,
    ProviderRunner,
    UserInfo,
    VariableProvider,
    build_providers,
    fetch_variables,
    variables_json,
)
from chatops.templating.store import TemplateStore
from tests.databases import empty_database
from tests.providers import NOW, JsonApi, make_context


@dataclass(frozen=True)
class Spec:
    """Stands for chatops.config's ProviderSpec: build_providers only reads these attributes."""

    name: str
    use: str
    provides: tuple[str, ...] = ()
    help: dict[str, str] = field(default_factory=dict)
    timeout: float | timedelta | None = 2.0
    cache_ttl: float | timedelta | None = None
    retries: int = 0
    options: dict[str, Any] = field(default_factory=dict)


def fetch(providers: list[VariableProvider], context: ProviderContext | None = None) -> FetchResult:
    with ProviderRunner(providers) as runner:
        return runner.fetch_variables(context or make_context())


def build_one(spec: Spec, base_dir: Path | None = None) -> VariableProvider:
    return build_providers([spec], base_dir=base_dir or Path.cwd())[0]


def http_spec(api: JsonApi, path: str = "/orders/{{ user.id }}", **changes: Any) -> Spec:
    options = {"url": api.url + path, **changes.pop("options", {})}
    return Spec(name="order", use="http", provides=("status", "eta"), options=options, **changes)


# --- built-ins -----------------------------------------------------------------------------------------------------


def test_static_and_builtin_variables_are_always_present() -> None:
    result = fetch_variables([], make_context())

    assert result.ok
    variables = result.variables
    assert variables["company"] == "Northwind"
    assert dict(variables["user"]) == {
        "id": "•••••••••5678",  # a WhatsApp id is the phone number: templates see it masked
        "name": "Ada",
        "phone": "•••••••••5678",
        "channel": "whatsapp",
    }
    assert variables["conversation"]["stage"] == "tracking"
    assert variables["conversation"]["last_messages"] == [{"direction": "in", "text": "where is my order?", "at": NOW}]
    clock = variables["clock"]
    assert (clock["weekday"], clock["time"], clock["hour"], clock["business_hours"]) == ("Monday", "10:30", 10, True)
    assert clock["today"].isoformat() == "2026-03-02"
    assert clock["now"].utcoffset() == timedelta(hours=1)
    assert variables["message"]["text"] == "Berlin"
    assert variables["message"]["caption"] is None  # every message key exists, whatever the kind


def test_the_whatsapp_number_is_revealed_to_templates_only_when_the_stage_asks() -> None:
    full = UserInfo(id="4915112345678", channel="whatsapp", name="Ada", phone="4915112345678", reveal_phone=True)
    psid = UserInfo(id="1739141089378194", channel="messenger", name="Ada")

    revealed = fetch_variables([], make_context(user=full)).variables["user"]
    messenger = fetch_variables([], make_context(user=psid)).variables["user"]

    assert (revealed["id"], revealed["phone"]) == ("4915112345678", "4915112345678")
    assert (messenger["id"], messenger["phone"]) == ("1739141089378194", None)  # a PSID is not a phone number


@pytest.mark.parametrize(
    ("phone", "masked"),
    [("+1 (555) 010-4321", "•••••••4321"), ("4321", "••••"), ("", None), (None, None)],
)
def test_phone_numbers_keep_only_their_last_four_digits(phone: str | None, masked: str | None) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("now", "hours", "expected"),
    [
        (datetime(2026, 3, 7, 11, 0, tzinfo=UTC), "Mon-Fri 09:00-17:00", False),  # Saturday
        (datetime(2026, 3, 6, 15, 59, tzinfo=UTC), "Mon-Fri 09:00-17:00", True),  # Friday 16:59 Berlin
        (datetime(2026, 3, 6, 16, 0, tzinfo=UTC), "Mon-Fri 09:00-17:00", False),  # Friday 17:00 Berlin
        (datetime(2026, 3, 7, 0, 30, tzinfo=UTC), "Fri 22:00-02:00", True),  # past midnight into Saturday
        (datetime(2026, 3, 7, 9, 30, tzinfo=UTC), "Mon–Fri 9:00–17:00; Sat 10:00-14:00", True),
        (NOW, None, None),
    ],
)
def test_clock_business_hours_in_the_bots_timezone(now: datetime, hours: str | None, expected: bool | None) -> None:
    result = fetch_variables([], make_context(now=now, business_hours=hours))

    assert result.variables["clock"]["business_hours"] is expected


def test_a_bad_timezone_is_a_recorded_failure_not_an_exception() -> None:
    result = fetch_variables([], make_context(timezone="Mars/Olympus"))

    assert [(e.name, e.error) for e in result.errors] == [
        ("clock", "unknown timezone 'Mars/Olympus' (hint: use an IANA name such as Europe/Berlin or UTC)")
    ]
    assert "clock" not in result.variables
    assert "user" in result.variables


def test_context_needs_an_aware_time() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        make_context(now=datetime(2026, 3, 2, 9, 30))  # the naive time is the point


def inbound(fixture: Any, name: str, parse: Any) -> InboundMessage:
    events = parse(json.loads(fixture.bytes(name)))
    message = events[0]
    assert isinstance(message, InboundMessage)
    return message


def test_message_variables_for_each_kind(meta_fixture: Any) -> None:
    text = message_variables(inbound(meta_fixture, "wa_text", parse_whatsapp))
    button = message_variables(inbound(meta_fixture, "wa_interactive_button_reply", parse_whatsapp))
    location = message_variables(inbound(meta_fixture, "wa_location", parse_whatsapp))
    reaction = message_variables(inbound(meta_fixture, "wa_reaction", parse_whatsapp))
    document = message_variables(inbound(meta_fixture, "wa_document", parse_whatsapp))
    quick_reply = message_variables(inbound(meta_fixture, "ms_quick_reply", parse_messenger))

    assert (text["kind"], text["channel"]) == ("text", "whatsapp")
    assert text["text"]
    assert button["kind"] == "button"
    assert button["button"]
    assert button["button_title"]
    assert location["kind"] == "location"
    assert isinstance(location["latitude"], float)
    assert reaction["kind"] == "reaction"
    assert reaction["emoji"]
    assert reaction["reacted_to"]
    assert document["kind"] == "document"
    assert document["filename"]
    assert document["mime_type"]
    assert document["forwarded"] is True
    assert quick_reply["channel"] == "messenger"
    assert quick_reply["button"]
    assert text.keys() == button.keys() == location.keys() == message_variables(None).keys()
    assert message_variables(None)["kind"] is None


def test_variables_render_in_a_template_and_serialise_for_the_turn(tmp_path: Path) -> None:
    (tmp_path / "hello.j2").write_text("Hi {{ user.name }} ({{ user.phone }}), it is {{ clock.weekday }}.")
    result = fetch_variables([], make_context())

    rendered = TemplateStore(tmp_path).render("hello.j2", result.variables)

    assert rendered.text == "Hi Ada (•••••••••5678), it is Monday."
    snapshot = variables_json(result.variables)
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["clock"]["now"] == "2026-03-02T10:30:00+01:00"


# --- http ----------------------------------------------------------------------------------------------------------


def test_http_provider_exposes_the_declared_keys(api: JsonApi) -> None:
    api.script["/orders/4915112345678"] = [(200, {"status": "shipped", "eta": "Friday", "internal": 1})]

    result = fetch([build_one(http_spec(api))])

    assert result.ok, result.errors
    assert dict(result.variables["order"]) == {"status": "shipped", "eta": "Friday"}
    assert result.timings["order"] >= 0


def test_http_url_values_are_quoted(api: JsonApi) -> None:
    api.script["/orders/a%2Fb%20c%3F"] = [(200, {"status": "ok", "eta": None})]
    context = make_context(user=UserInfo(id="a/b c?", channel="messenger"))

    result = fetch([build_one(http_spec(api, "/orders/{{ user.id }}?q={{ message.text }}"))], context)

    assert result.ok, result.errors
    assert api.requests[0]["path"] == "/orders/a%2Fb%20c%3F?q=Berlin"


@pytest.mark.parametrize(
    ("template", "value", "path"),
    [
        ("/orders/{{ user.id }}/items", ".", "/orders/%2E/items"),
        ("/orders/{{ user.id }}/items", "..", "/orders/%2E%2E/items"),
        ("/orders/{{ user.id }}", "..", "/orders/%2E%2E"),
        ("/orders/{{ user.id }}{{ user.id }}/items", ".", "/orders/%2E%2E/items"),
        ("/orders/{{ user.id }}/items", "v1.2", "/orders/v1.2/items"),
    ],
)
def test_http_url_dot_values_stay_inside_their_segment(api: JsonApi, template: str, value: str, path: str) -> None:
    api.script[path] = [(200, {"status": "ok", "eta": None})]
    context = make_context(user=UserInfo(id=value, channel="messenger"))

    result = fetch([build_one(http_spec(api, template))], context)

    assert api.requests[0]["path"] == path  # not /items or / (the dot segment resolved away)
    assert result.ok, result.errors


def test_http_retries_a_server_error(api: JsonApi) -> None:
    api.script["/orders/4915112345678"] = [(500, {"error": "boom"}), (200, {"status": "late", "eta": "Monday"})]

    result = fetch([build_one(http_spec(api, retries=2))])

    assert result.ok, result.errors
    assert result.variables["order"]["status"] == "late"
    assert api.hits("/orders/4915112345678") == 2


def test_http_gives_up_after_its_retries(api: JsonApi) -> None:
    api.script["/orders/4915112345678"] = [(503, {"error": "down"})]

    result = fetch([build_one(http_spec(api, retries=1))])

    assert [e.error for e in result.errors] == [
        "provider 'order': GET " + api.url + "/orders/{{ user.id }} answered HTTP 503 (2 attempts)"
    ]
    assert "order" not in result.variables


def test_a_failed_provider_is_logged_with_host_and_path_template_only(
    api: JsonApi, chatops_logging: pytest.LogCaptureFixture
) -> None:
    """The rendered URL carries the customer's number, name and text: neither the log nor the error shows it."""
    caplog = chatops_logging
    path = "/orders/{{ user.id }}/{{ user.name }}?q={{ message.text }}&key=sk-shop-secret"
    api.script["/orders/4915112345678/Ada"] = [(503, {"error": "down"})]

    result = fetch([build_one(http_spec(api, path))])

    shown = f"GET {api.url}/orders/{{{{ user.id }}}}/{{{{ user.name }}}} answered HTTP 503"
    assert [e.error for e in result.errors] == [f"provider 'order': {shown} (1 attempt)"]
    assert f"provider 'order' failed: provider 'order': {shown}" in caplog.text
    for private in ("4915112345678", "Ada", "Berlin", "sk-shop-secret"):
        assert private not in caplog.text


def test_http_timeout_is_recorded_within_the_timeout(api: JsonApi) -> None:
    api.script["/orders/4915112345678"] = [(200, "slow")]
    started = time.perf_counter()

    result = fetch([build_one(http_spec(api, timeout=0.3))])

    elapsed = time.perf_counter() - started
    assert [(e.name, e.timed_out) for e in result.errors] == [("order", True)]
    assert result.errors[0].error == "provider 'order' timed out after 0.3 s"
    assert 0.25 <= result.errors[0].elapsed_ms / 1000 < 1.5  # generous: CI machines stall
    assert elapsed < 1.5


def test_http_client_errors_are_not_retried(api: JsonApi) -> None:
    result = fetch([build_one(http_spec(api, "/nowhere", retries=3))])

    assert result.errors[0].error == f"provider 'order': GET {api.url}/nowhere answered HTTP 404"
    assert api.hits("/nowhere") == 1


def test_http_missing_declared_key_fails_unless_allowed(api: JsonApi) -> None:
    api.script["/orders/4915112345678"] = [(200, {"status": "packed"})]

    strict = fetch([build_one(http_spec(api))])
    lenient = fetch([build_one(http_spec(api, options={"missing": "none"}))])

    assert strict.errors[0].error == "provider 'order' did not provide 'eta' (hint: it returned: status)"
    assert dict(lenient.variables["order"]) == {"status": "packed", "eta": None}


def test_http_select_headers_from_environment_and_post_body(api: JsonApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TOKEN", "s3cret")
    api.script["/search"] = [(200, {"data": {"order": {"status": "found", "eta": "today"}}})]
    options = {
        "method": "post",
        "headers": {"Authorization": "Bearer ${SHOP_TOKEN}", "X-User": "{{ user.id }}"},
        "body": {"customer": "{{ user.id }}", "limit": 1},
        "select": "data.order",
    }

    result = fetch([build_one(http_spec(api, "/search", options=options))])

    assert result.ok, result.errors
    assert result.variables["order"]["status"] == "found"
    request = api.requests[0]
    assert request["headers"]["Authorization"] == "Bearer s3cret"
    assert request["headers"]["X-User"] == "4915112345678"
    assert json.loads(request["body"]) == {"customer": "4915112345678", "limit": 1}


def test_http_answer_that_is_not_a_json_object_fails(api: JsonApi) -> None:
    api.script["/orders/4915112345678"] = [(200, b"<html>oops</html>")]
    api.script["/list"] = [(200, [1, 2])]

    not_json = fetch([build_one(http_spec(api))])
    a_list = fetch([build_one(http_spec(api, "/list"))])

    assert not_json.errors[0].error.endswith("/orders/{{ user.id }} did not answer JSON")
    assert a_list.errors[0].error.endswith("/list did not answer a JSON object")


def test_http_url_with_an_undefined_variable_is_a_recorded_failure(api: JsonApi) -> None:
    result = fetch([build_one(http_spec(api, "/orders/{{ user.email }}"))])

    assert result.errors[0].error.startswith(
        "provider 'order' url: 'user' has no attribute 'email' (it provides: channel, id, name, phone)"
    )
    assert api.requests == []


def test_http_provider_accepts_the_bot_definitions_spec(api: JsonApi) -> None:
    from chatops.config.bot_schema import ProviderSpec

    api.script["/orders/4915112345678"] = [(200, {"status": "shipped", "eta": "Friday"})]
    spec = ProviderSpec.model_validate(
        {
            "name": "order",
            "use": "http",
            "url": api.url + "/orders/{{ user.id }}",
            "provides": ["status", "eta"],
            "timeout": "2s",
            "cache_ttl": "1m",
            "help": {"status": "where the parcel is"},
        }
    )

    [provider] = build_providers([spec], base_dir=Path.cwd())

    assert provider.provides == {"status": "where the parcel is", "eta": ""}
    assert fetch([provider]).variables["order"]["eta"] == "Friday"


# --- build errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message", "hint"),
    [
        (
            Spec("order", "htp", ("status",)),
            "provider 'order': unknown kind 'htp' (did you mean 'http'?)",
            "use one of",
        ),
        (Spec("order", "http", ("status",)), "provider 'order' (use: http) needs the option 'url'", "url: https://"),
        (
            Spec("order", "http", ("status",), options={"url": "{{ base }}/orders"}),
            "provider 'order': url must start with http:// or https:// (got '{{ base }}/orders')",
            "URL-quoted",
        ),
        (
            Spec("order", "http", ("status",), options={"url": "https://x/{{ user.id "}),
            "provider 'order': provider 'order' url: syntax error: unexpected end of template",
            "the template is",
        ),
        (
            Spec("order", "http", ("status",), options={"url": "https://${NO_SUCH_VARIABLE}/o"}),
            "provider 'order' uses ${NO_SUCH_VARIABLE}, but the environment variable NO_SUCH_VARIABLE is not set",
            "export NO_SUCH_VARIABLE",
        ),
        (
            Spec("order", "http", ("status",), options={"url": "https://x", "verb": "GET"}),
            "provider 'order' (use: http): unknown option 'verb'",
            "http providers accept: url, method, headers, body, select, missing",
        ),
        (Spec("user", "http", ("status",)), "provider name 'user' is reserved", "reserved: clock"),
        (Spec("order-info", "http", ("status",)), "provider name 'order-info' is not a valid variable name", None),
        (Spec("order", "http", ("eta time",)), "provider 'order': 'eta time' is not a valid variable name", None),
        (Spec("order", "http", ("status",), timeout=0), "provider 'order': timeout must be positive", None),
        (Spec("order", "no_such.module:Thing", ("x",)), "provider 'order': cannot import 'no_such.module'", None),
        (Spec("order", "tests.test_providers:Nothing", ("x",)), "has no attribute 'Nothing'", None),
        (Spec("order", "tests.test_providers:NOW", ("x",)), "'tests.test_providers:NOW' is not callable", None),
        (Spec("order", "tests.test_providers:no_fetch", ("x",)), "returned dict, which has no fetch(context)", None),
    ],
)
def test_bad_specs_are_bot_definition_errors_with_hints(spec: Spec, message: str, hint: str | None) -> None:
    with pytest.raises(BotDefinitionError) as caught:
        build_one(spec)

    assert message in caught.value.message
    if hint is not None:
        assert caught.value.hint is not None
        assert hint in caught.value.hint


def test_duplicate_provider_names_are_refused() -> None:
    spec = Spec("greeting", "tests.test_providers:GreetingProvider", ("greeting",))

    with pytest.raises(BotDefinitionError, match="provider 'greeting' is declared twice"):
        build_providers([spec, spec], base_dir=Path.cwd())


# --- sql -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        connection.executescript(
            """
            CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, status TEXT, eta TEXT);
            INSERT INTO orders (customer, status, eta) VALUES
              ('4915112345678', 'shipped', 'Friday'),
              ('4915112345678', 'packed', 'Monday'),
              ('other', 'lost', NULL);
            """
        )
    connection.close()
    return tmp_path


def sql_spec(**options: Any) -> Spec:
    defaults = {
        "database_url": "sqlite:///shop.db",
        "query": "SELECT status, eta FROM orders WHERE customer = :customer ORDER BY id",
        "params": {"customer": "user.id"},
    }
    return Spec("order", "sql", ("status", "eta"), options={**defaults, **options})


def test_sql_provider_gives_the_first_row(shop: Path) -> None:
    result = fetch([build_one(sql_spec(), shop)])

    assert result.ok, result.errors
    assert dict(result.variables["order"]) == {"status": "shipped", "eta": "Friday"}


def test_sql_parameters_are_bound_never_pasted(shop: Path) -> None:
    sneaky = make_context(user=UserInfo(id="x' OR '1'='1", channel="messenger"))

    result = fetch([build_one(sql_spec(), shop)], sneaky)

    assert dict(result.variables["order"]) == {"status": None, "eta": None}  # no row: every name is None


def test_sql_rows_mode_and_template_parameters(shop: Path) -> None:
    spec = Spec(
        "orders",
        "sql",
        ("orders",),
        options={
            "database_url": f"sqlite:///{shop / 'shop.db'}",
            "query": "SELECT status FROM orders WHERE customer = :customer ORDER BY id",
            "params": {"customer": "{{ user.id }}"},
            "result": "rows",
        },
    )

    result = fetch([build_one(spec, Path("/elsewhere"))])

    assert result.variables["orders"]["orders"] == [{"status": "shipped"}, {"status": "packed"}]


def test_sql_query_errors_are_recorded(shop: Path) -> None:
    result = fetch([build_one(sql_spec(query="SELECT status, eta FROM nowhere WHERE c = :customer"), shop)])

    assert result.errors[0].error.startswith("provider 'order': query failed: OperationalError")


@pytest.fixture
def shop_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """An orders table in a new database of ``backend``, as the URL a bot author writes (``postgresql://…``)."""
    with empty_database(backend, tmp_path) as url:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            connection.execute(
                sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, status TEXT, eta TEXT)")
            )
            connection.execute(sa.text("INSERT INTO orders VALUES (1, '4915112345678', 'shipped', 'Friday')"))
        engine.dispose()
        parsed = make_url(url)
        yield parsed.set(drivername=parsed.get_backend_name()).render_as_string(hide_password=False)


def test_sql_provider_reads_a_postgresql_url_as_the_docs_write_it(shop_url: str) -> None:
    result = fetch([build_one(sql_spec(database_url=shop_url))])

    assert result.ok, result.errors
    assert dict(result.variables["order"]) == {"status": "shipped", "eta": "Friday"}


@contextmanager
def table_locked(url: str) -> Iterator[None]:
    """Another client holds a lock that keeps readers of ``orders`` waiting, until the block ends."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        holder = sqlite3.connect(str(parsed.database), isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # rollback journal: readers wait for the lock
        try:
            yield
        finally:
            holder.rollback()
            holder.close()
        return
    engine = sa.create_engine(parse_database_url(url), poolclass=sa.NullPool)
    with engine.connect() as connection:
        connection.execute(sa.text("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()
    engine.dispose()


def fetch_in_thread(provider: VariableProvider, *, wait: float) -> tuple[BaseException | None, float]:
    """Call ``provider.fetch`` in a thread; (its exception, seconds taken). Fails when it is still blocked."""
    outcome: list[BaseException | None] = []
    started = time.monotonic()

    def call() -> None:
        try:
            provider.fetch(make_context())
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(wait)
    assert outcome, f"the provider's thread is still blocked after {wait} s"
    return outcome[0], time.monotonic() - started


def test_sql_provider_gives_up_on_a_locked_table_at_its_timeout(shop_url: str) -> None:
    provider = build_one(dataclasses.replace(sql_spec(database_url=shop_url), timeout=0.5))
    try:
        with table_locked(shop_url):
            error, seconds = fetch_in_thread(provider, wait=4)
    finally:
        close(provider)

    assert isinstance(error, ProviderError)
    assert error.message.startswith("provider 'order': query did not finish within its timeout of 0.5 s ("), error
    assert 0.4 < seconds < 2.5


def test_sql_provider_interrupts_a_slow_query_at_its_timeout(backend: str, shop_url: str) -> None:
    slow = {
        "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 100000000) "
        "SELECT max(x) AS status, :customer AS eta FROM n",
        "postgresql": "SELECT pg_sleep(10)::text AS status, :customer AS eta",
    }[backend]
    provider = build_one(dataclasses.replace(sql_spec(database_url=shop_url, query=slow), timeout=0.5))
    try:
        error, seconds = fetch_in_thread(provider, wait=4)
        assert isinstance(error, ProviderError)
        assert "query did not finish within its timeout of 0.5 s" in error.message
        assert seconds < 2.5
        # The pooled connection keeps no deadline: the next fetch of a quick query works.
        fast = dataclasses.replace(sql_spec(database_url=shop_url), timeout=0.5)
        assert dict(build_one(fast).fetch(make_context())) == {"status": "shipped", "eta": "Friday"}
    finally:
        close(provider)


def close(provider: VariableProvider) -> None:
    closer = getattr(provider, "close", None)
    if closer is not None:
        closer()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"query": "DELETE FROM orders WHERE customer = :customer"}, "the query must be a SELECT"),
        ({"params": {}}, "the query uses :customer, but params has no 'customer'"),
        ({"params": {"customer": "user.id", "x": "1"}}, "params has 'x', but the query has no :x"),
        ({"database_url": "not a url"}, "database_url is not a database URL"),
        ({"database_url": "nosuchdb://x"}, "cannot use database_url"),
        ({"params": {"customer": "user.id +"}}, "syntax error in expression 'user.id +'"),
    ],
)
def test_bad_sql_specs(shop: Path, options: dict[str, Any], message: str) -> None:
    with pytest.raises(BotDefinitionError, match="provider 'order'") as caught:
        build_one(sql_spec(**options), shop)

    assert message in caught.value.message


# --- lookup --------------------------------------------------------------------------------------------------------


def test_lookup_in_a_yaml_table(tmp_path: Path) -> None:
    (tmp_path / "stores.yaml").write_text(
        "berlin: {store: Mitte, phone: '030 1234'}\nmunich: {store: Zentrum}\n", encoding="utf-8"
    )
    spec = Spec("store", "lookup", ("store", "phone"), options={"file": "stores.yaml", "key": "message.text"})
    provider = build_one(spec, tmp_path)

    found = fetch([provider], make_context(message={"text": "  BERLIN "}))
    sparse = fetch([provider], make_context(message={"text": "Munich"}))
    missing = fetch([provider], make_context(message={"text": "Paris"}))

    assert dict(found.variables["store"]) == {"store": "Mitte", "phone": "030 1234"}
    assert dict(sparse.variables["store"]) == {"store": "Zentrum", "phone": None}
    assert dict(missing.variables["store"]) == {"store": None, "phone": None}


def test_lookup_default_and_plain_values(tmp_path: Path) -> None:
    (tmp_path / "greetings.yml").write_text("de: Hallo\nfr: Bonjour\n", encoding="utf-8")
    spec = Spec(
        "hello",
        "lookup",
        ("word",),
        options={"file": "greetings.yml", "key": "'{{ message.text }}'", "default": {"word": "Hello"}},
    )
    spec_expression = Spec("hello", "lookup", ("word",), options={"file": "greetings.yml", "key": "message.text"})

    assert (
        fetch([build_one(spec_expression, tmp_path)], make_context(message={"text": "fr"})).variables["hello"]["word"]
        == "Bonjour"
    )
    assert (
        fetch([build_one(spec, tmp_path)], make_context(message={"text": "xx"})).variables["hello"]["word"] == "Hello"
    )


def test_lookup_in_a_csv_table(tmp_path: Path) -> None:
    (tmp_path / "plans.csv").write_text("name,code,price\nBasic,b1,10\nPro,p2,25\n", encoding="utf-8")
    spec = Spec(
        "plan",
        "lookup",
        ("name", "price"),
        options={"file": "plans.csv", "key": "message.button", "key_column": "code"},
    )

    result = fetch([build_one(spec, tmp_path)], make_context(message={"kind": "button", "button": "P2"}))

    assert dict(result.variables["plan"]) == {"name": "Pro", "price": "25"}


@pytest.mark.parametrize(
    ("files", "options", "message"),
    [
        ({}, {"file": "none.yaml", "key": "message.text"}, "lookup file"),
        ({"t.csv": "a,b\n1,2\n"}, {"file": "t.csv", "key": "message.text"}, "has no column 'price'"),
        ({"t.yaml": "- a\n- b\n"}, {"file": "t.yaml", "key": "message.text"}, "must be a mapping of key -> values"),
        ({"t.yaml": "a: [\n"}, {"file": "t.yaml", "key": "message.text"}, "is not valid YAML"),
        ({"t.json": "{}"}, {"file": "t.json", "key": "message.text"}, "is neither YAML nor CSV"),
        ({"t.yaml": "a: {price: 1}"}, {"file": "t.yaml"}, "needs the option 'key'"),
    ],
)
def test_bad_lookup_specs(tmp_path: Path, files: dict[str, str], options: dict[str, Any], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")

    with pytest.raises(BotDefinitionError) as caught:
        build_one(Spec("plan", "lookup", ("price", "other"), options=options), tmp_path)

    assert message in caught.value.message


# --- Python providers ----------------------------------------------------------------------------------------------


class GreetingProvider:
    """A provider as a plugin author writes one: built from its spec, fetch reads the context."""

    provides: Mapping[str, str] = {"greeting": "a friendly greeting"}

    def __init__(self, spec: Any) -> None:
        self.name = spec.name
        self.word = spec.options.get("word", "Hello")

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        return {"greeting": f"{self.word}, {context.user.name}!"}


def shouting_greeting(spec: Any) -> GreetingProvider:
    provider = GreetingProvider(spec)
    provider.word = provider.word.upper()
    return provider


def no_fetch(spec: Any) -> dict[str, str]:
    return {"not": "a provider"}


def test_python_provider_by_dotted_path() -> None:
    by_class = build_one(Spec("hi", "tests.test_providers:GreetingProvider", options={"word": "Moin"}))
    by_factory = build_one(Spec("hi2", "tests.test_providers.shouting_greeting"))

    result = fetch([by_class, by_factory])

    assert by_class.provides == {"greeting": "a friendly greeting"}  # its own, as the spec lists none
    assert result.variables["hi"]["greeting"] == "Moin, Ada!"
    assert result.variables["hi2"]["greeting"] == "HELLO, Ada!"


def test_python_provider_by_entry_point(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist_info = tmp_path / "site" / "chatops_greeting-1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: chatops-greeting\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        "[chatops.providers]\ngreeting = tests.test_providers:GreetingProvider\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))

    provider = build_one(Spec("hello", "greeting", ("greeting",), options={"word": "Hej"}))

    assert fetch([provider]).variables["hello"]["greeting"] == "Hej, Ada!"
    with pytest.raises(BotDefinitionError, match=r"unknown kind 'greting' \(did you mean 'greeting'\?\)"):
        build_one(Spec("hello", "greting", ("greeting",)))


# --- the runner ----------------------------------------------------------------------------------------------------


class CountingProvider:
    name = "counter"
    provides: Mapping[str, str] = {"n": "how often fetch ran"}

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        with self.lock:
            self.calls += 1
            return {"n": self.calls}


class BlockingProvider:
    name = "slow"
    provides: Mapping[str, str] = {"value": "comes too late"}

    def __init__(self) -> None:
        self.release = threading.Event()

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        self.release.wait(5)
        return {"value": 1}


class BrokenProvider:
    name = "broken"
    provides: Mapping[str, str] = {"value": "never"}

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        raise RuntimeError("database on fire")


def test_cache_ttl_follows_the_injected_clock() -> None:
    counter = CountingProvider()
    provider = ConfiguredProvider(counter, "counter", counter.provides, timeout=1, cache_ttl=60)
    now = [1000.0]
    other_user = make_context(user=UserInfo(id="someone-else", channel="whatsapp"))

    with ProviderRunner([provider], clock=lambda: now[0]) as runner:
        first = runner.fetch_variables(make_context())
        second = runner.fetch_variables(make_context())
        for_other_user = runner.fetch_variables(other_user)
        now[0] += 61
        expired = runner.fetch_variables(make_context())

    assert [r.variables["counter"]["n"] for r in (first, second, for_other_user, expired)] == [1, 1, 2, 3]
    assert (first.cached, second.cached) == ([], ["counter"])


def test_only_the_named_providers_run() -> None:
    counter = CountingProvider()
    provider = ConfiguredProvider(counter, "counter", counter.provides)

    result = fetch_variables([provider], make_context(), names={"user", "company"})

    assert counter.calls == 0
    assert "counter" not in result.variables
    assert result.variables["company"] == "Northwind"


def test_a_slow_provider_cannot_hold_the_turn() -> None:
    slow, counter = BlockingProvider(), CountingProvider()
    providers = [
        ConfiguredProvider(slow, "slow", slow.provides, timeout=0.2),
        ConfiguredProvider(counter, "counter", counter.provides, timeout=1),
    ]
    started = time.perf_counter()
    try:
        result = fetch(providers)
    finally:
        slow.release.set()

    assert time.perf_counter() - started < 1.5  # the blocked provider would take 5 s
    assert [(e.name, e.timed_out) for e in result.errors] == [("slow", True)]
    assert result.variables["counter"]["n"] == 1


def test_failures_are_returned_never_raised() -> None:
    broken = BrokenProvider()
    wrong_shape = ConfiguredProvider(CountingProvider(), "counter", {"n": "", "m": ""})

    result = fetch([ConfiguredProvider(broken, "broken", broken.provides), wrong_shape])

    assert [(e.name, e.error) for e in result.errors] == [
        ("broken", "RuntimeError: database on fire"),
        ("counter", "provider 'counter' did not provide 'm' (hint: it returned: n)"),
    ]
    assert not result.ok
    assert result.to_json()["errors"][0] == {
        "name": "broken",
        "error": "RuntimeError: database on fire",
        "elapsed_ms": result.errors[0].elapsed_ms,
        "timed_out": False,
    }


def test_a_plain_provider_runs_with_the_default_limits() -> None:
    counter = CountingProvider()

    result = fetch_variables([counter], make_context())

    assert result.variables["counter"]["n"] == 1


def test_a_closed_runner_reports_failures_instead_of_raising() -> None:
    counter = CountingProvider()
    runner = ProviderRunner([counter])
    runner.close()

    result = runner.fetch_variables(make_context())

    assert [e.error for e in result.errors] == ["RuntimeError: cannot schedule new futures after shutdown"]
    assert result.variables["user"]["name"] == "Ada"
