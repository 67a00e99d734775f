"""The operator console through the Flask test client: login, sessions, CSRF, pages, actions and roles."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from chatops.cli.app import app as cli
from chatops.db import audit
from chatops.db.staff import create_account, list_accounts
from chatops.db.tables import conversations, outbound_messages, staff_sessions
from chatops.web.console import pages
from tests.admin import ROLES, deliver, handed_off, sent_texts
from tests.console import PASSWORD, ConsoleHarness, staff_email
from tests.fakes.graph_api import FakeGraphAPI

runner = CliRunner()


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
    with FakeGraphAPI() as server:
        yield server


@pytest.fixture
def console(tmp_path: Path, database_url: str, db: sa.Engine, graph: FakeGraphAPI) -> Iterator[ConsoleHarness]:
    harness = ConsoleHarness(tmp_path, database_url, db, graph_api_url=graph.graph_api_url)
    yield harness
    harness.runtime.variables.runner.close()


def actions(console: ConsoleHarness) -> list[tuple[str | None, str, str]]:
    return [(e.actor, e.action, e.outcome) for e in reversed(audit.list_entries(console.db, limit=200))]


# Login, sessions, CSRF ---------------------------------------------------------------------------------------


def test_pages_need_a_login_and_the_login_page_answers(console: ConsoleHarness) -> None:
    client = console.browser()
    response = client.get("/console/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/console/login?next=/console/")
    page = client.get("/console/login")
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.text
    assert client.get("/console/inbox/rows", headers={"X-Console-Fragment": "1"}).status_code == 401


def test_login_sets_a_signed_httponly_samesite_cookie_and_logout_ends_the_session(console: ConsoleHarness) -> None:
    client = console.browser()
    token = console.token(client, "/console/login")
    response = client.post(
        "/console/login",
        data={"email": "Operator@Shop.example ", "password": PASSWORD, "csrf_token": token, "next": "/console/"},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("chatops_console=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/console" in cookie
    inbox = client.get("/console/")
    assert inbox.status_code == 200
    assert "operator@shop.example · operator" in inbox.text
    assert console.post_form(client, "/console/", "/console/logout").status_code == 302
    assert client.get("/console/").status_code == 302
    [(revoked,)] = console.rows(staff_sessions, "revoked_at")
    assert revoked is not None
    assert ("staff:operator@shop.example", "console.logout", "ok") in actions(console)


def test_a_stolen_cookie_is_refused_after_logout(console: ConsoleHarness) -> None:
    client = console.login("viewer")
    stolen = client.get_cookie("chatops_console", path="/console")
    assert stolen is not None
    console.post_form(client, "/console/", "/console/logout")
    thief = console.browser()
    thief.set_cookie("chatops_console", stolen.value, path="/console")
    assert thief.get("/console/").status_code == 302


def test_wrong_password_unknown_email_and_disabled_account_are_refused_alike(console: ConsoleHarness) -> None:
    client = console.browser()
    for email, password in (
        (staff_email("admin"), "wrong password!"),
        ("nobody@shop.example", PASSWORD),
    ):
        response = console.post_form(client, "/console/login", "/console/login", {"email": email, "password": password})
        assert response.status_code == 401
        assert "Wrong email or password" in response.text
    runner.invoke(
        cli, ["users", "set", staff_email("viewer"), "--disable", "--database-url", console.settings.database_url]
    )
    response = console.post_form(
        client, "/console/login", "/console/login", {"email": staff_email("viewer"), "password": PASSWORD}
    )
    assert response.status_code == 401
    assert ("login:admin@shop.example", "console.login", "rejected") in actions(console)


def test_a_session_expires_when_idle(console: ConsoleHarness) -> None:
    client = console.login("viewer")
    console.clock.advance(20 * 60)
    assert client.get("/console/").status_code == 200  # 20 minutes idle: still in
    console.clock.advance(29 * 60)
    assert client.get("/console/").status_code == 200  # activity moved the idle timer
    console.clock.advance(31 * 60)
    response = client.get("/console/")
    assert response.status_code == 302
    assert "/console/login" in response.headers["Location"]


def test_log_out_everywhere_ends_every_session_of_the_account(console: ConsoleHarness) -> None:
    phone, desk = console.login("operator"), console.login("operator")
    other = console.login("viewer")
    assert console.post_form(phone, "/console/", "/console/logout-everywhere").status_code == 302
    assert desk.get("/console/").status_code == 302
    assert other.get("/console/").status_code == 200


def test_an_admin_disabling_an_account_ends_its_sessions(console: ConsoleHarness) -> None:
    victim = console.login("operator")
    admin = console.login("admin")
    response = console.post_form(
        admin, "/console/admin/staff", f"/console/admin/staff/{staff_email('operator')}", {"action": "disable"}
    )
    assert response.status_code == 302
    assert victim.get("/console/").status_code == 302
    assert ("staff:admin@shop.example", "console.staff_disable", "ok") in actions(console)


def test_a_form_without_the_csrf_token_is_refused(console: ConsoleHarness) -> None:
    conversation = handed_off(console)
    client = console.login("operator")
    for action in ("/console/logout", f"/console/conversations/{conversation}/reply"):
        response = console.post_form(client, "/console/", action, {"text": "hi"}, csrf=False)
        assert response.status_code == 400
        assert "CSRF token is missing" in response.text
    response = client.post(f"/console/conversations/{conversation}/reply", data={"text": "hi", "csrf_token": "forged"})
    assert response.status_code == 400
    assert console.rows(outbound_messages, "sent_by")[-1] == (None,)  # nothing was sent
    login = console.browser()
    refused = login.post("/console/login", data={"email": staff_email("admin"), "password": PASSWORD})
    assert refused.status_code == 400


def test_login_attempts_are_rate_limited_per_email_even_with_the_right_password(console: ConsoleHarness) -> None:
    client = console.browser(address="198.51.100.7")
    for _ in range(5):
        response = console.post_form(
            client, "/console/login", "/console/login", {"email": staff_email("admin"), "password": "guess guess"}
        )
        assert response.status_code == 401
    response = console.post_form(
        client, "/console/login", "/console/login", {"email": staff_email("admin"), "password": PASSWORD}
    )
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) > 0
    assert "Too many login attempts" in response.text
    # another account from the same address is still allowed
    console.login("viewer", client=console.browser(address="198.51.100.7"))
    assert ("login:admin@shop.example", "console.login", "denied") in actions(console)


def test_next_never_leaves_the_console(console: ConsoleHarness) -> None:
    client = console.browser()
    for target in ("https://evil.example/", "//evil.example/console", "/api/v1/keys"):
        response = console.post_form(
            client,
            "/console/login",
            "/console/login",
            {"email": staff_email("viewer"), "password": PASSWORD, "next": target},
        )
        assert response.headers["Location"] == "/console/"
        console.post_form(client, "/console/", "/console/logout")


# Pages -------------------------------------------------------------------------------------------------------


def test_inbox_shows_waiting_first_with_how_long_and_filters(console: ConsoleHarness) -> None:
    console.send("hello", wa_id="15550002222")
    console.drain()
    conversation = handed_off(console)
    console.clock.advance(5 * 60)
    client = console.login("viewer")
    page = client.get("/console/")
    assert page.status_code == 200
    waiting, _, others = page.text.partition("Other conversations")
    assert f"/console/conversations/{conversation}" in waiting
    assert "waiting 5m" in waiting
    assert "15550002222" not in waiting
    assert "Ada" in others
    assert 'id="waiting-count" title="waiting for a person">1<' in page.text
    assert page.text.count("<title>(1) Inbox") == 1
    rows = client.get("/console/inbox/rows?mode=bot", headers={"X-Console-Fragment": "1"})
    assert rows.headers["X-Waiting-Count"] == "0"
    assert "Nobody is waiting" in rows.text
    assert "<html" not in rows.text
    assert client.get("/console/?channel=messenger").text.count("conversation-link") == 0


def test_the_longest_waiting_come_first_and_older_conversations_page(
    console: ConsoleHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the page sizes: the inbox keeps the longest waits (not the latest updates), counts every waiting
    conversation, and pages through the others with an "Older conversations" link."""
    monkeypatch.setattr(pages, "WAITING_LIMIT", 2)
    monkeypatch.setattr(pages, "OTHERS_LIMIT", 2)
    now = console.clock()
    rows = [("human", f"waited-{m}", now - timedelta(minutes=m), now - timedelta(minutes=m)) for m in (30, 20, 10)]
    rows += [("bot", f"bot-{m}", None, now - timedelta(minutes=m)) for m in (1, 2, 3)]
    with console.db.begin() as connection:
        for mode, user, last_inbound_at, updated_at in rows:
            connection.execute(
                sa.insert(conversations).values(
                    channel="whatsapp",
                    account_id="1",
                    user_id=user,
                    user_name=user,
                    mode=mode,
                    state={},
                    last_inbound_at=last_inbound_at,
                    created_at=updated_at,
                    updated_at=updated_at,
                )
            )
    client = console.login("viewer")

    page = client.get("/console/")
    waiting, _, others = page.text.partition("Other conversations")
    assert ["waited-30" in waiting, "waited-20" in waiting, "waited-10" in waiting] == [True, True, False]
    assert waiting.index("waited-30") < waiting.index("waited-20")
    assert 'data-waiting="3">3<' in waiting
    assert "The 2 who have waited longest are shown" in waiting
    assert 'id="waiting-count" title="waiting for a person">3<' in page.text
    assert ["bot-1" in others, "bot-2" in others, "bot-3" in others] == [True, True, False]
    older = re.search(r'<a rel="next" href="([^"]+)">Older conversations</a>', others)
    assert older is not None

    second = client.get(html.unescape(older.group(1))).text.partition("Other conversations")[2]
    assert ["bot-1" in second, "bot-2" in second, "bot-3" in second] == [False, False, True]
    assert "Older conversations" not in second
    assert ">Newest</a>" in second
    assert "bot-1" in client.get("/console/?cursor=not-a-cursor").text  # an edited link starts at the newest
    rows = client.get("/console/inbox/rows", headers={"X-Console-Fragment": "1"})
    assert rows.headers["X-Waiting-Count"] == "3"


def test_conversation_page_shows_thread_buttons_ticks_traces_state_and_window(
    console: ConsoleHarness, graph: FakeGraphAPI
) -> None:
    conversation = handed_off(console)
    deliver(console)
    with console.db.begin() as connection:
        connection.execute(
            sa.update(outbound_messages)
            .where(outbound_messages.c.id == 1)
            .values(status="failed", error_code=131047, error="Re-engagement message")
        )
    page = console.login("viewer").get(f"/console/conversations/{conversation}")
    assert page.status_code == 200
    text = page.text
    assert "hello" in text
    assert "I need a human" in text
    assert '<span class="choice">Track my order</span>' in text  # the buttons the user saw
    assert "Graph error 131047: Re-engagement message" in text
    assert 'class="tick status-sent"' in text
    assert '<details class="trace"><summary>Turn 1:' in text
    assert "window open, " not in text  # a viewer sees no reply form
    assert "open, closes" in text
    assert "replying needs the operator role" in text
    assert console.login("viewer").get("/console/conversations/999").status_code == 404


def test_media_messages_show_a_placeholder(console: ConsoleHarness) -> None:
    conversation = handed_off(console)
    with console.db.begin() as connection:
        from chatops.db.tables import inbound_messages

        connection.execute(
            sa.update(inbound_messages).where(inbound_messages.c.id == 1).values(kind="image", text="a receipt")
        )
    thread = console.login("viewer").get(f"/console/conversations/{conversation}/thread")
    assert '<span class="media">[image]</span> <span class="text">a receipt</span>' in thread.text


# Actions and roles -------------------------------------------------------------------------------------------


def test_operator_replies_and_the_reply_reaches_the_graph_api(console: ConsoleHarness, graph: FakeGraphAPI) -> None:
    conversation = handed_off(console)
    client = console.login("operator")
    page = f"/console/conversations/{conversation}"
    assert "window open, 24h left" in client.get(page).text
    response = console.post_form(client, page, f"{page}/reply", {"text": "Hi, Ana here. How can I help?"})
    assert response.status_code == 302
    assert response.headers["Location"] == page
    assert "Sent." in client.get(page).text
    deliver(console)
    assert sent_texts(graph)[-1] == "Hi, Ana here. How can I help?"
    assert console.rows(outbound_messages, "sent_by")[-1] == ("staff:operator@shop.example",)
    assert ("staff:operator@shop.example", "console.reply", "ok") in actions(console)


def test_a_closed_window_offers_the_template_and_refuses_free_text(
    console: ConsoleHarness, graph: FakeGraphAPI
) -> None:
    conversation = handed_off(console)
    console.clock.advance(25 * 3600)
    client = console.login("operator")
    page = f"/console/conversations/{conversation}"
    text = client.get(page).text
    assert "The 24-hour window is closed" in text
    assert "Send template message" in text
    refused = console.post_form(client, page, f"{page}/reply", {"text": "late"})
    assert refused.status_code == 302
    assert "window" in client.get(page).text
    assert ("staff:operator@shop.example", "console.reply", "rejected") in actions(console)


def test_take_over_pause_hand_back_and_note(console: ConsoleHarness) -> None:
    console.send("hello")
    console.drain()
    conversation = console.conversation_id()
    client = console.login("operator")
    page = f"/console/conversations/{conversation}"

    def mode() -> str:
        [(value,)] = console.rows(conversations, "mode")
        return str(value)

    console.post_form(client, page, f"{page}/takeover")
    assert mode() == "human"
    console.post_form(client, page, f"{page}/pause")
    assert mode() == "paused"
    console.post_form(client, page, f"{page}/note", {"text": "Customer is a regular; be kind."})
    assert "Customer is a regular; be kind." in client.get(page).text
    console.post_form(client, page, f"{page}/handback", {"stage": "menu"})
    assert mode() == "bot"
    assert console.rows(conversations, "stage") == [("menu",)]
    refused = console.post_form(client, page, f"{page}/handback", {"stage": "nowhere"})
    assert refused.status_code == 302
    assert "unknown stage" in client.get(page).text
    done = [a for a in actions(console) if a[1].startswith("console.") and a[1] != "console.login"]
    assert done == [
        ("staff:operator@shop.example", "console.takeover", "ok"),
        ("staff:operator@shop.example", "console.pause", "ok"),
        ("staff:operator@shop.example", "console.note", "ok"),
        ("staff:operator@shop.example", "console.handback", "ok"),
        ("staff:operator@shop.example", "console.handback", "rejected"),
    ]


def _routes(console: ConsoleHarness) -> list[tuple[str, str, str]]:
    """(method, rule, role) of every console route with a role, from the app itself."""
    found = []
    for rule in console.app.url_map.iter_rules():
        view = console.app.view_functions[rule.endpoint]
        role = getattr(view, "required_role", None)
        if rule.endpoint.startswith("console.") and role is not None:
            for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
                found.append((method, rule.rule, role.value))
    return found


def test_every_route_allows_its_role_and_above_and_refuses_below(console: ConsoleHarness) -> None:
    conversation = handed_off(console)
    create_account(console.db, email="target@shop.example", password=PASSWORD, role="viewer", now=console.clock())
    values = {"conversation_id": str(conversation), "email": "target@shop.example", "name": "viewer-key"}
    routes = _routes(console)
    assert len(routes) >= 16
    clients = {role: console.login(role) for role in ROLES}
    for method, rule, needed in routes:
        path = rule
        for name, value in values.items():
            path = path.replace(f"<int:{name}>", value).replace(f"<{name}>", value)
        for role in ROLES:
            client = clients[role]
            if rule in ("/console/logout", "/console/logout-everywhere"):
                client = console.login(role)  # these end the session(s): log in again afterwards
            if method == "GET":
                status = client.get(path).status_code
            else:
                status = console.post_form(client, "/console/", path, {"text": "x", "action": "logout"}).status_code
            if rule in ("/console/logout", "/console/logout-everywhere"):
                clients[role] = console.login(role)
            allowed = ROLES.index(role) >= ROLES.index(needed)
            assert (status != 403) == allowed, (method, path, role, status)
            assert status < 500
    denied = [a for a in actions(console) if a[2] == "denied"]
    assert ("staff:viewer@shop.example", "console.reply", "denied") in denied


# Admin pages -------------------------------------------------------------------------------------------------


def test_admin_manages_staff_and_api_keys_and_reads_the_audit_log(console: ConsoleHarness) -> None:
    client = console.login("admin")
    response = console.post_form(
        client,
        "/console/admin/staff",
        "/console/admin/staff",
        {"email": "Bo@Shop.example", "password": "a long password", "role": "operator"},
    )
    assert response.status_code == 302
    assert "bo@shop.example" in [a.email for a in list_accounts(console.db)]
    short = console.post_form(
        client,
        "/console/admin/staff",
        "/console/admin/staff",
        {"email": "cy@shop.example", "password": "x", "role": "viewer"},
    )
    assert short.status_code == 302
    assert "too short" in client.get("/console/admin/staff").text
    console.post_form(
        client, "/console/admin/staff", "/console/admin/staff/bo@shop.example", {"action": "role", "role": "admin"}
    )
    assert {a.email: a.role for a in list_accounts(console.db)}["bo@shop.example"] == "admin"
    created = console.post_form(
        client, "/console/admin/keys", "/console/admin/keys", {"name": "desk", "role": "viewer"}
    )
    assert created.status_code == 200
    assert 'id="new-secret">chatops_' in created.text
    assert "desk" in client.get("/console/admin/keys").text
    assert "chatops_" not in client.get("/console/admin/keys").text
    old_secret = created.text.split('id="new-secret">')[1].split("<")[0]
    rotated = console.post_form(client, "/console/admin/keys", "/console/admin/keys/desk/rotate")
    assert rotated.status_code == 200
    assert 'id="new-secret">chatops_' in rotated.text
    assert old_secret not in rotated.text
    assert console.call("GET", "/conversations", key=old_secret).status_code == 401
    console.post_form(client, "/console/admin/keys", "/console/admin/keys/desk/revoke")
    assert "revoked" in client.get("/console/admin/keys").text
    log = client.get("/console/admin/audit").text
    for action in (
        "console.staff_create",
        "console.staff_role",
        "console.keys_create",
        "console.keys_rotate",
        "console.keys_revoke",
    ):
        assert action in log
    assert "staff:admin@shop.example" in log


# CLI ---------------------------------------------------------------------------------------------------------


def test_users_cli_creates_lists_changes_and_logs_out(console: ConsoleHarness) -> None:
    url = ["--database-url", console.settings.database_url]
    created = runner.invoke(
        cli,
        ["users", "create", "--email", "dee@shop.example", "--role", "viewer", "--password-stdin", *url],
        input="another long password\n",
    )
    assert created.exit_code == 0, created.output
    assert "Created staff account dee@shop.example (viewer)" in created.stdout
    again = runner.invoke(
        cli,
        ["users", "create", "--email", "dee@shop.example", "--role", "viewer", "--password-stdin", *url],
        input="another long password\n",
    )
    assert again.exit_code == 1
    assert "a staff account 'dee@shop.example' exists" in again.stderr
    short = runner.invoke(
        cli,
        ["users", "create", "--email", "eve@shop.example", "--role", "viewer", "--password-stdin", *url],
        input="short\n",
    )
    assert short.exit_code == 1
    assert "too short" in short.stderr
    listed = runner.invoke(cli, ["users", "list", "--json", *url])
    assert [u["email"] for u in __import__("json").loads(listed.stdout)][-1] == "dee@shop.example"
    client = console.login(None)
    console.login("viewer", client=client)
    logged_out = runner.invoke(cli, ["users", "logout", staff_email("viewer"), *url])
    assert logged_out.exit_code == 0
    assert "Ended 1 session(s)" in logged_out.stdout
    assert client.get("/console/").status_code == 302
    changed = runner.invoke(cli, ["users", "set", "dee@shop.example", "--role", "operator", *url])
    assert "dee@shop.example: operator, active" in changed.stdout
    assert any(e.action == "users.create" for e in audit.list_entries(console.db))


def test_console_assets_are_served_by_chatops(console: ConsoleHarness) -> None:
    client = console.browser()
    for name, kind in (("console.css", "text/css"), ("console.js", "javascript")):
        response = client.get(f"/console/static/{name}")
        assert response.status_code == 200
        assert kind in response.content_type
        response.close()
    page = client.get("/console/login").text
    assert "http://" not in page
    assert "https://" not in page
    assert "default-src 'self'" in client.get("/console/login").headers["Content-Security-Policy"]
