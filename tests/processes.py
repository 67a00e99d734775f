"""``chatops serve`` as a child process, Meta's side of a delivery, and what to watch: the fake Graph API's
requests, the database rows and the process tree.

The process tests share these (tests/test_server_process.py, test_crash_recovery.py, test_gunicorn.py, ...); the
``fakes``, ``bot_dir`` and ``serve`` fixtures built on them are in tests/conftest.py.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import sqlalchemy as sa

from chatops.channels import sign
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from tests.fakes.graph_api import FakeGraphAPI, RecordedRequest
from tests.fakes.openai_server import FakeOpenAI
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, whatsapp_text

BANNER = re.compile(r"chatops serving .* on (http://\S+)")
OPENAI_KEY = "sk-test-process"
WORKERS = 4
SENDER_CONCURRENCY = 4  # OutboxSender's default thread pool: at most this many Graph requests in flight
UNSENT = ("pending", "sending")
T = TypeVar("T")


# A chatops serve process -------------------------------------------------------------------------------------


class ServeProcess:
    """``chatops serve`` as a child process; output goes to a log file that failures quote."""

    def __init__(
        self, workdir: Path, env: dict[str, str], *, name: str, args: tuple[str, ...] = (), session: bool = False
    ) -> None:
        """``session``: start it in a session (and process group) of its own, as a shell starts a command."""
        self.workdir = workdir
        self.env = env
        self.args = args
        self.session = session
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, *, timeout: float = 60.0) -> ServeProcess:
        """Spawn and wait for the banner's URL (port 0: the server picks a free port and prints it). The timeout
        is generous: on a busy machine the imports and migrations of a start took over 30 s."""
        command = [sys.executable, "-m", "chatops", "serve", "--port", "0", "--workers", str(WORKERS), *self.args]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=self.session,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = BANNER.search(self.log.read_text(errors="replace"))
            if match:
                self.url = match.group(1)
                return self
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"chatops serve did not start:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases and in-flight sends are left as a crash leaves them."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (graceful), SIGKILL when it takes too long."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class Fakes:
    graph: FakeGraphAPI
    openai: FakeOpenAI


# Meta's side: signed deliveries ------------------------------------------------------------------------------


def serve_env(database_url: str, fakes: Fakes, **settings: str) -> dict[str, str]:
    """The environment of a test ``chatops serve``: this process' without ``CHATOPS_*``/``OPENAI_*`` (no stray
    settings), the test bot's WhatsApp secrets and the loopback fakes, then ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
    return env | {
        "CHATOPS_DATABASE_URL": database_url,
        "CHATOPS_WHATSAPP_APP_SECRET": APP_SECRET,
        "CHATOPS_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "CHATOPS_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
        "CHATOPS_GRAPH_API_URL": fakes.graph.graph_api_url,
        "CHATOPS_GRAPH_TIMEOUT": "5",
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fakes.openai.base_url,
        "COLUMNS": "200",  # the banner line is never wrapped
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


def post(client: httpx.Client, url: str, body: bytes, *, signed: bool = True) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if signed:
        headers["X-Hub-Signature-256"] = sign(body, APP_SECRET)
    return client.post(f"{url}/webhooks/whatsapp", content=body, headers=headers)


def message(text: str, *, wa_id: str, message_id: str) -> bytes:
    """A WhatsApp text webhook stamped now (older messages are stored but not answered: stale_after)."""
    return whatsapp_text(text, wa_id=wa_id, message_id=message_id, timestamp=int(time.time()))


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, server: ServeProcess | None = None) -> T:
    """Poll ``condition`` every 50 ms until it is truthy; fail after ``timeout`` seconds with the server log."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            log = f"\nserver log:\n{server.tail()}" if server is not None else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{log}")
        time.sleep(0.05)


def readyz_answer(server: ServeProcess, status: int) -> httpx.Response | None:
    """GET /readyz when it answers ``status``; None otherwise, and None while nothing answers within 5 s: a web
    process still booting (Gunicorn's, on a busy machine) leaves the connection waiting in the listen queue."""
    try:
        response = httpx.get(f"{server.url}/readyz", timeout=5)
    except httpx.TimeoutException:
        return None
    return response if response.status_code == status else None


# What the fake Graph API received ----------------------------------------------------------------------------


def sends(graph: FakeGraphAPI, to: str | None = None) -> list[RecordedRequest]:
    """Message sends (not mark-as-read), in arrival order, optionally to one user."""
    return [r for r in graph.requests if "to" in (r.body or {}) and (to is None or r.body["to"] == to)]


def reads(graph: FakeGraphAPI) -> list[str]:
    """The message ids marked as read."""
    return [r.body["message_id"] for r in graph.requests if (r.body or {}).get("status") == "read"]


def sent_text(request: RecordedRequest) -> str:
    body = request.body
    return str(body["interactive"]["body"]["text"] if body["type"] == "interactive" else body["text"]["body"])


# What the database holds -------------------------------------------------------------------------------------


def inbound(db: sa.Engine, *, wa_id: str | None = None) -> list[Any]:
    m, c = inbound_messages.c, conversations.c
    query = sa.select(m.id, m.provider_message_id, m.text, m.status, m.turn_id, c.user_id).join(
        conversations, c.id == m.conversation_id
    )
    if wa_id is not None:
        query = query.where(c.user_id == wa_id)
    with db.connect() as connection:
        return list(connection.execute(query.order_by(m.id)).all())


def conversation_turns(db: sa.Engine, *, wa_id: str) -> list[Any]:
    t, c = turns.c, conversations.c
    query = (
        sa.select(t.id, t.started_at, t.finished_at, t.inbound_ids)
        .join(conversations, c.id == t.conversation_id)
        .where(c.user_id == wa_id)
        .order_by(t.id)
    )
    with db.connect() as connection:
        return list(connection.execute(query).all())


def outbound(db: sa.Engine) -> list[Any]:
    o, c = outbound_messages.c, conversations.c
    query = sa.select(o.id, o.turn_id, o.status, o.body, o.updated_at, c.user_id).join(
        conversations, c.id == o.conversation_id
    )
    with db.connect() as connection:
        return list(connection.execute(query.order_by(o.id)).all())


def unanswered(db: sa.Engine, provider_ids: set[str]) -> list[str]:
    """The messages among ``provider_ids`` not yet answered: not stored, not done, or a reply of their turn unsent."""
    rows = {row.provider_message_id: row for row in inbound(db)}
    replies_by_turn: dict[int, list[str]] = {}
    for reply in outbound(db):
        replies_by_turn.setdefault(reply.turn_id, []).append(reply.status)
    missing = []
    for provider_id in sorted(provider_ids):
        row = rows.get(provider_id)
        statuses = replies_by_turn.get(row.turn_id, []) if row is not None else []
        if row is None or row.status != "done" or not statuses or any(s in UNSENT for s in statuses):
            missing.append(provider_id)
    return missing


def reply_counts(db: sa.Engine, graph: FakeGraphAPI) -> dict[int, int]:
    """How many times the fake Graph API received each outbound row (matched on recipient and text)."""
    received = Counter((r.body["to"], sent_text(r)) for r in sends(graph))
    return {row.id: received[(row.user_id, row.body["text"])] for row in outbound(db)}


def overlap(intervals: list[tuple[Any, Any]]) -> int:
    """The most intervals open at one instant (a sweep over start and end points; an end sorts before a start)."""
    points = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, step in points:
        current += step
        most = max(most, current)
    return most


# Meta retrying, and what a crash leaves behind -------------------------------------------------------------


class Meta:
    """Meta's side of a delivery: POST until a 200 (Meta retries for up to 7 days); remembers what was acknowledged."""

    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.url = ""
        self.acknowledged: set[str] = set()
        self.failed: list[tuple[str, bytes]] = []  # not acknowledged yet: delivered again later
        self.refused = 0

    def deliver(self, provider_id: str, body: bytes) -> None:
        try:
            response = post(self.client, self.url, body)
        except httpx.TransportError:  # the server is dead or dying: no answer is no acknowledgement
            response = None
        if response is not None and response.status_code == 200:
            self.acknowledged.add(provider_id)
        else:
            self.refused += 1
            self.failed.append((provider_id, body))

    def retry_failed(self, *, deadline: float) -> None:
        while self.failed and time.monotonic() < deadline:
            pending, self.failed = self.failed, []
            for provider_id, body in pending:
                self.deliver(provider_id, body)
            if self.failed:
                time.sleep(0.1)


def held_leases(db: sa.Engine) -> int:
    """Conversations a worker holds (a live lease): after a kill, the turns that were cut short."""
    c = conversations.c
    with db.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).where(c.locked_by.is_not(None))).scalar_one())


def sending_rows(db: sa.Engine) -> int:
    """Replies in flight (``sending``): after a kill, the sends that were cut short."""
    o = outbound_messages.c
    with db.connect() as connection:
        return int(connection.execute(sa.select(sa.func.count()).where(o.status == "sending")).scalar_one())


# The process tree --------------------------------------------------------------------------------------------


def children(pid: int) -> dict[int, str]:
    """The child processes of ``pid``: pid → command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found[int(entry.name)] = command
    return found
