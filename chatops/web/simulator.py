"""``chatops simulate``: one user message through the real webhook route and the real worker, on a laptop.

:meth:`Simulator.send` does what Meta and a server would do, with nothing re-implemented::

    build the webhook body Meta would send (fresh message id, the clock's timestamp) ─▶ sign its exact bytes ─▶
    POST it through the Flask test client of ``create_app`` (signature check, parser, inbox) ─▶
    ``Worker.work_once()`` until the message is answered or nothing is due ─▶ read the turns it produced ─▶
    settle their outbound rows: ``sent`` with provider id ``simulated.<row id>`` (or ``failed`` when the request
    builder refuses them, as the sender would)

Nothing reaches Meta: the settled rows are never ``pending``, so no sender, now or later, delivers them. When the
channel has no app secret configured, an ephemeral random one (and placeholder tokens, so the channel is enabled)
is used by this in-process app only. :func:`send_to_server` posts the same signed body to a running server instead.
docs/simulate.md is the user's guide.
"""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import SecretStr

from chatops.channels import ADAPTERS, OutboundMessage, sign
from chatops.channels.events import Channel
from chatops.channels.whatsapp import MAX_REPLY_BUTTONS
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings, channel_credentials
from chatops.db.connect import check_connection, create_db_engine, parse_database_url, storage_error
from chatops.db.migrate import Revision, ensure_schema_current, migrate, migration_status
from chatops.db.outbox import mark_failed, mark_sent
from chatops.db.tables import conversations, inbound_messages, outbound_messages, turns
from chatops.engine.runtime import build_runtime, whatsapp_template
from chatops.engine.sender import CUSTOMER_SERVICE_WINDOW, OUTSIDE_WINDOW_ERROR
from chatops.engine.worker import Worker, worker_name
from chatops.errors import ChannelError, ChatopsError, ConfigError
from chatops.web.app import create_app
from chatops.web.state import utc_now

DEFAULT_USER_ID = "15550001234"  # 555-01xx: a fictional number, never a real subscriber
DEFAULT_USER_NAME = "Alex"
SIMULATED_ACCOUNT_IDS: dict[Channel, str] = {"whatsapp": "100000000000001", "messenger": "100000000000002"}
SIMULATED_PREFIX = "simulated."  # outbound provider ids, and inside inbound message ids
MAX_TURNS_PER_MESSAGE = 100  # older pending messages of the same conversation are answered first
DEFAULT_POLL_TIMEOUT = 30.0


@dataclass(frozen=True)
class UserInput:
    """What the simulated user sends: ``text``, a ``button`` press (its id), or a ``location`` (lat, lon)."""

    text: str | None = None
    button: str | None = None
    location: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        given = [value for value in (self.text, self.button, self.location) if value is not None]
        if len(given) != 1:
            raise ValueError("a UserInput is exactly one of text, button or location")

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "button": self.button, "location": list(self.location) if self.location else None}


@dataclass(frozen=True)
class SimulatedReply:
    """One outbound row of a turn: its body, the Graph API request that carries it, and what became of it."""

    id: int
    message: OutboundMessage
    status: str
    provider_message_id: str | None
    request: dict[str, Any] | None  # {"method", "url", "json"}: what the sender POSTs (token left out)
    error: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "provider_message_id": self.provider_message_id,
            "body": self.message.to_json(),
            "request": self.request,
            "error": self.error,
        }


@dataclass(frozen=True)
class SimulatedTurn:
    """One row of ``turns`` (the full trace) with its replies."""

    id: int
    stage_before: str | None
    stage_after: str | None
    user_text: str | None
    trace: dict[str, Any]  # variables, prompt, model, parameters, intent, ai_response, usage, … as stored
    error: str | None
    replies: tuple[SimulatedReply, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "turn_id": self.id,
            "stage_before": self.stage_before,
            "stage_after": self.stage_after,
            "user_text": self.user_text,
            "replies": [reply.to_json() for reply in self.replies],
            **self.trace,
            "error": self.error,
        }


@dataclass(frozen=True)
class SimulationResult:
    """What one simulated message did. ``turn`` answered it; ``earlier_turns`` answered older pending messages.

    ``message_status`` is the inbound row's status (``done``, ``skipped``, ``failed``, or ``pending`` when no turn
    ran: the conversation is with a person, a failed turn waits for its retry, or a remote server is slow).
    ``transcript`` is False when the turns could not be read (``--url`` with another database); ``note`` says why.
    """

    channel: Channel
    user_id: str
    user_name: str | None
    sent: UserInput
    message_id: str
    webhook_status: int
    conversation_id: int | None = None
    message_status: str | None = None
    message_error: str | None = None
    mode: str | None = None
    stage: str | None = None
    turn: SimulatedTurn | None = None
    earlier_turns: tuple[SimulatedTurn, ...] = ()
    transcript: bool = True
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        """One machine-readable object (``simulate --json``): the turn's trace at the top level."""
        turn = self.turn.to_json() if self.turn else {"turn_id": None, "stage_before": self.stage, "replies": []}
        return {
            "channel": self.channel,
            "conversation_id": self.conversation_id,
            "user": {"id": self.user_id, "name": self.user_name},
            "message": {
                "id": self.message_id,
                **self.sent.to_json(),
                "status": self.message_status,
                "error": self.message_error,
            },
            "webhook_status": self.webhook_status,
            "mode": self.mode,
            **turn,
            "stage_after": turn.get("stage_after", self.stage),
            "earlier_turns": [t.to_json() for t in self.earlier_turns],
            "note": self.note,
        }


def simulation_settings(settings: Settings, channel: Channel) -> tuple[Settings, str]:
    """``settings`` for the in-process app, and the app secret to sign with.

    A missing app secret becomes an ephemeral random one, missing tokens random placeholders (so the channel is
    enabled; nothing is ever sent with them); ``debounce_seconds`` is 0 because simulate sends one message at a time.
    """
    credentials = channel_credentials(settings, channel)
    secret = credentials.app_secret or secrets.token_hex(32)
    token_field = "whatsapp_access_token" if channel == "whatsapp" else "messenger_page_token"
    update: dict[str, Any] = {f"{channel}_app_secret": SecretStr(secret), "debounce_seconds": 0.0}
    if not credentials.verify_token:
        update[f"{channel}_verify_token"] = SecretStr(secrets.token_hex(16))
    if not credentials.send_token:
        update[token_field] = SecretStr(secrets.token_hex(16))
    return settings.model_copy(update=update), secret


def prepare_schema(db: sa.Engine) -> list[Revision]:
    """Bring a SQLite database to head (returns the revisions applied); on PostgreSQL only check.

    Raises StorageError when unreachable, SchemaOutOfDateError (hint: ``chatops migrate``) when PostgreSQL is behind.
    """
    check_connection(db)
    if migration_status(db).up_to_date:
        return []
    if db.dialect.name != "sqlite":
        ensure_schema_current(db)
    return migrate(db)[1]


class Simulator:
    """Simulated messages from one user on one channel, through an in-process app and worker sharing ``db``.

    ``at`` freezes the clock (naive times are in the bot's timezone); without it the real clock runs. The app,
    the worker and the outbox settlement all use that clock. Use as a context manager, or call :meth:`close`.
    Raises StorageError/SchemaOutOfDateError (see :func:`prepare_schema`) and ConfigError (the AI settings).
    """

    def __init__(
        self,
        settings: Settings,
        bot: BotDefinition,
        *,
        channel: Channel = "whatsapp",
        user_id: str = DEFAULT_USER_ID,
        user_name: str | None = DEFAULT_USER_NAME,
        at: datetime | None = None,
        db: sa.Engine | None = None,
    ) -> None:
        self.bot = bot
        self.channel = channel
        self.user_id = user_id
        self.user_name = user_name if channel == "whatsapp" else None  # Messenger webhooks carry no names
        self.account_id = _account_id(settings, channel)
        self.settings, self._secret = simulation_settings(settings, channel)
        if at is not None and at.tzinfo is None:
            at = at.replace(tzinfo=bot.bot.tzinfo)
        frozen = at
        self.clock: Callable[[], datetime] = (lambda: frozen) if frozen is not None else utc_now
        self._own_db = db is None
        self.db = db or create_db_engine(self.settings.database_url, pool_size=2)
        self.migrated: list[Revision] = []
        try:
            self.migrated = prepare_schema(self.db)
            self.app = create_app(self.settings, bot, db=self.db, clock=self.clock)
            self.runtime = build_runtime(self.settings, bot)
        except BaseException:
            self._dispose()
            raise
        self.client = self.app.test_client()
        self.worker = Worker(self.runtime, self.db, self.settings, clock=self.clock, name=f"simulate@{worker_name()}")

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the providers' clients and the database engine (when this simulator made it)."""
        self.runtime.variables.runner.close()
        self._dispose()

    def _dispose(self) -> None:
        if self._own_db:
            self.db.dispose()

    def send(self, message: UserInput) -> SimulationResult:
        """Post ``message`` through the webhook route, run the worker, settle the replies; return what happened.

        Writes the inbound message, the turn(s), and outbound rows marked ``sent``/``failed`` (never ``pending``).
        Raises ChannelError when the route refuses the webhook, StorageError when the database fails.
        """
        conversation_id = _conversation_id(self.db, self.channel, self.account_id, self.user_id)
        last_turn = _last_turn_id(self.db, conversation_id)
        body, message_id = build_webhook(
            self.channel,
            message,
            account_id=self.account_id,
            user_id=self.user_id,
            user_name=self.user_name,
            at=self.clock(),
            offer=_button_offer(self.db, self.bot, conversation_id, message.button),
        )
        response = self.client.post(
            f"/webhooks/{self.channel}",
            data=body,
            headers={"X-Hub-Signature-256": sign(body, self._secret), "Content-Type": "application/json"},
        )
        if response.status_code != 200:
            error = (response.get_json(silent=True) or {}).get("error", {})
            raise ChannelError(
                f"the {self.channel} webhook route answered {response.status_code}: {error.get('message', '')}"
            )
        for _ in range(MAX_TURNS_PER_MESSAGE):
            if _inbound(self.db, self.channel, message_id).get("status") != "pending" or not self.worker.work_once():
                break
        return _result(self, message, message_id, response.status_code, last_turn, settle=True)

    def reset(self) -> bool:
        """Start this user's conversation afresh: no stage, empty state, bot mode; history is kept.

        Pending inbound messages of the conversation are marked ``skipped`` (a new start does not answer them).
        Returns False when the user has no conversation yet.
        """
        c, m = conversations.c, inbound_messages.c
        now = self.clock()
        conversation_id = _conversation_id(self.db, self.channel, self.account_id, self.user_id)
        if conversation_id is None:
            return False
        try:
            with self.db.begin() as connection:
                connection.execute(
                    conversations.update()
                    .where(c.id == conversation_id)
                    .values(stage=None, state={}, mode="bot", session_started_at=None, updated_at=now)
                )
                connection.execute(
                    inbound_messages.update()
                    .where(m.conversation_id == conversation_id, m.status == "pending")
                    .values(status="skipped", error="skipped by `chatops simulate --fresh`")
                )
        except sa.exc.DBAPIError as exc:
            raise storage_error(self.db, exc) from None
        return True


def send_to_server(
    settings: Settings,
    bot: BotDefinition,
    url: str,
    message: UserInput,
    *,
    channel: Channel = "whatsapp",
    user_id: str = DEFAULT_USER_ID,
    user_name: str | None = DEFAULT_USER_NAME,
    at: datetime | None = None,
    timeout: float = DEFAULT_POLL_TIMEOUT,
    http: httpx.Client | None = None,
) -> SimulationResult:
    """POST a signed webhook to a running server at ``url`` (a base URL or the webhook URL itself).

    Signs with the configured app secret (raises ConfigError when there is none). When the configured database is
    the server's (the message is in it once the server answered 200), waits up to ``timeout`` seconds for the turn
    and returns it; the server's own sender delivers the replies. Raises ChannelError when the server is unreachable.
    """
    credentials = channel_credentials(settings, channel)
    if not credentials.app_secret:
        raise ConfigError(
            f"--url needs the {channel} app secret the server checks signatures with",
            hint=f"set {credentials.variables[0]} to the server's value (environment or .env)",
        )
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=bot.bot.tzinfo)
    user_name = user_name if channel == "whatsapp" else None
    db, note = _server_database(settings)
    account_id = _account_id(settings, channel)
    conversation_id = _conversation_id(db, channel, account_id, user_id) if db else None
    last_turn = _last_turn_id(db, conversation_id) if db else 0
    offer = _button_offer(db, bot, conversation_id, message.button) if db else None
    body, message_id = build_webhook(
        channel, message, account_id=account_id, user_id=user_id, user_name=user_name, at=at or utc_now(), offer=offer
    )
    target = url.rstrip("/") if "/webhooks/" in url else f"{url.rstrip('/')}/webhooks/{channel}"
    headers = {"X-Hub-Signature-256": sign(body, credentials.app_secret), "Content-Type": "application/json"}
    client = http or httpx.Client(timeout=10.0)
    try:
        response = client.post(target, content=body, headers=headers)
    except httpx.HTTPError as exc:
        if db is not None:
            db.dispose()
        raise ChannelError(f"cannot reach {target}: {type(exc).__name__}: {exc}") from None
    finally:
        if http is None:
            client.close()
    status = response.status_code
    if status != 200:
        note = f"the server refused the webhook: {_error_message(response)}"
    base = SimulationResult(channel, user_id, user_name, message, message_id, status, transcript=False, note=note)
    if db is None or status != 200:
        if db is not None:
            db.dispose()
        return base
    try:
        if not _inbound(db, channel, message_id):
            note = "the server stores messages in another database than the one configured here: no transcript"
            return replace(base, note=note)
        deadline = time.monotonic() + timeout
        while _inbound(db, channel, message_id).get("status") == "pending" and time.monotonic() < deadline:
            time.sleep(0.05)
        remote = _Remote(db, bot, channel, account_id, user_id, user_name, lambda: at or utc_now(), settings)
        result = _result(remote, message, message_id, status, last_turn, settle=False)
        if result.message_status == "pending":
            note = f"no turn within {timeout:g} s (is a worker running, or is the conversation with a person?)"
            return replace(result, note=note)
        return result
    finally:
        db.dispose()


# Webhook bodies, shaped like Meta's (see ../shared/fixtures/meta: wa_text.json, ms_text.json …) ------------------


@dataclass(frozen=True)
class ButtonOffer:
    """Where the pressed button was offered: its title, the message offering it, and how it was shown."""

    title: str
    offered_in: str | None = None  # provider id of the bot message with the button (WhatsApp ``context.id``)
    as_list: bool = False  # WhatsApp shows 4-10 choices as a list: the press is a ``list_reply``
    description: str | None = None
    quick_reply: bool = False  # Messenger: a quick reply under the last message, else a postback (menu)


def build_webhook(
    channel: Channel,
    message: UserInput,
    *,
    account_id: str,
    user_id: str,
    user_name: str | None,
    at: datetime,
    offer: ButtonOffer | None = None,
) -> tuple[bytes, str]:
    """The webhook body Meta would send for ``message`` (JSON bytes, non-ASCII escaped like Meta) and its new id."""
    token = uuid.uuid4().hex
    if channel == "whatsapp":
        message_id = f"wamid.{SIMULATED_PREFIX}{token}"
        payload = _whatsapp_body(message, message_id, account_id, user_id, user_name, at, offer)
    else:
        message_id = f"mid.{SIMULATED_PREFIX}{token}"
        payload = _messenger_body(message, message_id, account_id, user_id, at, offer)
    return json.dumps(payload).encode(), message_id


def _whatsapp_body(
    message: UserInput,
    message_id: str,
    account_id: str,
    user_id: str,
    user_name: str | None,
    at: datetime,
    offer: ButtonOffer | None,
) -> dict[str, Any]:
    item: dict[str, Any] = {"from": user_id, "id": message_id, "timestamp": str(int(at.timestamp()))}
    if message.button is not None:
        offer = offer or ButtonOffer(message.button)
        if offer.offered_in:
            item["context"] = {"from": "15550000000", "id": offer.offered_in}
        kind = "list_reply" if offer.as_list else "button_reply"
        reply = {"id": message.button, "title": offer.title}
        if offer.as_list and offer.description:
            reply["description"] = offer.description
        item |= {"type": "interactive", "interactive": {"type": kind, kind: reply}}
    elif message.location is not None:
        item |= {"type": "location", "location": {"latitude": message.location[0], "longitude": message.location[1]}}
    else:
        item |= {"type": "text", "text": {"body": message.text}}
    contact = {"profile": {"name": user_name or ""}, "wa_id": user_id}
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550000000", "phone_number_id": account_id},
        "contacts": [contact],
        "messages": [item],
    }
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "100000000000000", "changes": [{"value": value, "field": "messages"}]}],
    }


def _messenger_body(
    message: UserInput, message_id: str, page_id: str, user_id: str, at: datetime, offer: ButtonOffer | None
) -> dict[str, Any]:
    millis = int(at.timestamp() * 1000)
    event: dict[str, Any] = {"sender": {"id": user_id}, "recipient": {"id": page_id}, "timestamp": millis}
    if message.button is not None:
        offer = offer or ButtonOffer(message.button)
        if offer.quick_reply:
            event["message"] = {"mid": message_id, "text": offer.title, "quick_reply": {"payload": message.button}}
        else:
            event["postback"] = {"mid": message_id, "title": offer.title, "payload": message.button}
    elif message.location is not None:
        lat, lon = message.location
        attachment = {"type": "location", "title": "Location", "payload": {"coordinates": {"lat": lat, "long": lon}}}
        event["message"] = {"mid": message_id, "attachments": [attachment]}
    else:
        event["message"] = {"mid": message_id, "text": message.text}
    return {"object": "page", "entry": [{"id": page_id, "time": millis, "messaging": [event]}]}


# Reading what happened ------------------------------------------------------------------------------------------


@dataclass
class _Remote:
    """The parts of a Simulator that reading a result needs, for a server's database."""

    db: sa.Engine
    bot: BotDefinition
    channel: Channel
    account_id: str
    user_id: str
    user_name: str | None
    clock: Callable[[], datetime]
    settings: Settings


def _account_id(settings: Settings, channel: Channel) -> str:
    # The webhook route drops WhatsApp accounts outside CHATOPS_WHATSAPP_PHONE_NUMBER_IDS: use an allowed one.
    if channel == "whatsapp" and settings.whatsapp_phone_number_ids:
        return settings.whatsapp_phone_number_ids[0]
    return SIMULATED_ACCOUNT_IDS[channel]


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase or f"HTTP {response.status_code}"


def _server_database(settings: Settings) -> tuple[sa.Engine | None, str | None]:
    url = parse_database_url(settings.database_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None, f"no transcript: the configured database {url.database or ':memory:'} does not exist"
    db = create_db_engine(settings.database_url, pool_size=1)
    try:
        check_connection(db)
        ensure_schema_current(db)
    except ChatopsError as exc:
        db.dispose()
        return None, f"no transcript: {exc.message}"
    return db, None


def _read(db: sa.Engine, query: sa.Select[Any]) -> list[sa.Row[Any]]:
    try:
        with db.connect() as connection:
            return list(connection.execute(query).all())
    except sa.exc.DBAPIError as exc:
        raise storage_error(db, exc) from None


def _conversation_id(db: sa.Engine, channel: str, account_id: str, user_id: str) -> int | None:
    c = conversations.c
    rows = _read(db, sa.select(c.id).where(c.channel == channel, c.account_id == account_id, c.user_id == user_id))
    return int(rows[0].id) if rows else None


def _last_turn_id(db: sa.Engine, conversation_id: int | None) -> int:
    if conversation_id is None:
        return 0
    rows = _read(db, sa.select(sa.func.max(turns.c.id)).where(turns.c.conversation_id == conversation_id))
    return int(rows[0][0] or 0)


def _inbound(db: sa.Engine, channel: str, message_id: str) -> dict[str, Any]:
    m = inbound_messages.c
    query = sa.select(m.id, m.conversation_id, m.status, m.error, m.turn_id).where(
        m.channel == channel, m.provider_message_id == message_id
    )
    rows = _read(db, query)
    return dict(rows[0]._mapping) if rows else {}


def _button_offer(
    db: sa.Engine, bot: BotDefinition, conversation_id: int | None, button: str | None
) -> ButtonOffer | None:
    """How ``button`` was offered: in the conversation's latest bot message showing it, else in stages.yaml."""
    if button is None:
        return None
    if conversation_id is not None:
        o = outbound_messages.c
        query = sa.select(o.body, o.provider_message_id).where(o.conversation_id == conversation_id)
        for row in _read(db, query.order_by(o.id.desc()).limit(20)):
            offered = row.body.get("buttons") or []
            for choice in offered:
                if choice.get("id") == button:
                    return ButtonOffer(
                        choice.get("title") or button,
                        offered_in=row.provider_message_id,
                        as_list=len(offered) > MAX_REPLY_BUTTONS,
                        description=choice.get("description"),
                        quick_reply=True,
                    )
    for stage in bot.stages.values():
        for choice in stage.buttons:
            if choice.id == button:
                return ButtonOffer(choice.title, description=choice.description)
    return ButtonOffer(button)


def _result(
    source: Simulator | _Remote, sent: UserInput, message_id: str, status: int, after_turn: int, *, settle: bool
) -> SimulationResult:
    inbound = _inbound(source.db, source.channel, message_id)
    conversation_id = inbound.get("conversation_id")
    c, t = conversations.c, turns.c
    rows = _read(source.db, sa.select(c.stage, c.mode).where(c.id == conversation_id))
    query = sa.select(turns).where(t.conversation_id == conversation_id, t.id > after_turn).order_by(t.id)
    new_turns = [_turn(source, row, settle=settle) for row in _read(source.db, query)]
    answering = next((turn for turn in new_turns if turn.id == inbound.get("turn_id")), None)
    return SimulationResult(
        channel=source.channel,
        user_id=source.user_id,
        user_name=source.user_name,
        sent=sent,
        message_id=message_id,
        webhook_status=status,
        conversation_id=conversation_id,
        message_status=inbound.get("status"),
        message_error=inbound.get("error"),
        mode=rows[0].mode if rows else None,
        stage=rows[0].stage if rows else None,
        turn=answering,
        earlier_turns=tuple(turn for turn in new_turns if turn is not answering),
    )


_TRACE = ("variables", "prompt", "model", "parameters", "intent", "ai_response", "usage", "latency_ms")
_TRACE_MORE = ("template_versions", "bot_version", "started_at", "finished_at")


def _turn(source: Simulator | _Remote, row: sa.Row[Any], *, settle: bool) -> SimulatedTurn:
    o = outbound_messages.c
    query = sa.select(outbound_messages).where(o.turn_id == row.id).order_by(o.id)
    replies = tuple(_reply(source, reply, settle=settle) for reply in _read(source.db, query))
    trace = {name: getattr(row, name) for name in _TRACE + _TRACE_MORE}
    trace["started_at"], trace["finished_at"] = row.started_at.isoformat(), row.finished_at.isoformat()
    return SimulatedTurn(row.id, row.stage_before, row.stage_after, row.user_text, trace, row.error, replies)


def _reply(source: Simulator | _Remote, row: sa.Row[Any], *, settle: bool) -> SimulatedReply:
    """The reply with the request the sender would POST; with ``settle``, a pending row is marked done now."""
    message = OutboundMessage.from_json(row.body)
    base = source.settings.graph_api_url
    error = None
    if settle and row.status == "pending" and _outside_window(source):
        template = whatsapp_template(source.bot) if source.channel == "whatsapp" else None
        if template is None:
            error = OUTSIDE_WINDOW_ERROR
        message_to_send = template or message
    else:
        message_to_send = message
    request = None
    if error is None:
        try:
            json_body = ADAPTERS[source.channel].build_request(source.user_id, message_to_send)
            path = f"/{source.account_id}/messages" if source.channel == "whatsapp" else "/me/messages"
            request = {"method": "POST", "url": base + path, "json": json_body}
        except ChannelError as exc:
            error = exc.message
    status, provider_id = row.status, row.provider_message_id
    if settle and row.status == "pending":
        now = source.clock()
        with source.db.begin() as connection:
            if error is None:
                provider_id = f"{SIMULATED_PREFIX}{row.id}"
                mark_sent(connection, row.id, provider_message_id=provider_id, now=now)
                status = "sent"
            else:
                mark_failed(connection, row.id, error_code=None, error=error, now=now)
                status = "failed"
    return SimulatedReply(row.id, message, status, provider_id, request, error or row.error)


def _outside_window(source: Simulator | _Remote) -> bool:
    """The sender's 24-hour customer-service rule, on the simulation's clock."""
    c = conversations.c
    rows = _read(
        source.db,
        sa.select(c.last_inbound_at).where(
            c.channel == source.channel, c.user_id == source.user_id, c.account_id == source.account_id
        ),
    )
    last = rows[0].last_inbound_at if rows else None
    return last is None or source.clock() - last > CUSTOMER_SERVICE_WINDOW
