"""``simulate --url``: the same signed webhook, posted to a running server; the transcript read from its database."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import httpx
import sqlalchemy as sa

from chatops.channels import sign
from chatops.channels.events import Channel
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings, channel_credentials
from chatops.db.connect import check_connection, create_db_engine, parse_database_url
from chatops.db.migrate import ensure_schema_current
from chatops.errors import ChannelError, ChatopsError, ConfigError
from chatops.web.simulator.bodies import UserInput, build_webhook
from chatops.web.simulator.inprocess import DEFAULT_USER_ID, DEFAULT_USER_NAME, frozen_clock
from chatops.web.simulator.records import UserConversation, account_id_for
from chatops.web.simulator.results import SimulationResult

DEFAULT_POLL_TIMEOUT = 30.0
POLL_INTERVAL = 0.05


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
    """POST a signed webhook for ``message`` to the server at ``url`` (its base URL or the webhook URL).

    Signs with the configured app secret. When the configured database is the server's (the message is in it as
    soon as the server answered 200), waits up to ``timeout`` seconds for the turn and returns it; the server's
    own sender delivers the replies. ``at`` only sets the message's timestamp: the server keeps its own clock.
    Raises ConfigError without an app secret, ChannelError when the server cannot be reached.
    """
    credentials = channel_credentials(settings, channel)
    if not credentials.app_secret:
        raise ConfigError(
            f"--url needs the {channel} app secret the server checks signatures with",
            hint=f"set {credentials.variables[0]} to the server's value (environment or .env)",
        )
    clock = frozen_clock(at, bot)
    db, note = _server_database(settings)
    conversation = (
        UserConversation(
            db=db,
            bot=bot,
            settings=settings,
            channel=channel,
            account_id=account_id_for(settings, channel),
            user_id=user_id,
            user_name=user_name if channel == "whatsapp" else None,
            clock=clock,
        )
        if db is not None
        else None
    )
    try:
        after_turn = conversation.last_turn_id() if conversation else 0
        body, message_id = build_webhook(
            channel,
            message,
            account_id=account_id_for(settings, channel),
            user_id=user_id,
            user_name=user_name if channel == "whatsapp" else None,
            at=clock(),
            offer=conversation.button_offer(message.button) if conversation else None,
        )
        target = url.rstrip("/") if "/webhooks/" in url else f"{url.rstrip('/')}/webhooks/{channel}"
        response = _post(target, body, sign(body, credentials.app_secret), http)
        status = response.status_code
        if status != 200:
            note = f"the server refused the webhook: {_error_message(response)}"
        result = SimulationResult(channel, user_id, user_name, message, message_id, status, transcript=False, note=note)
        if conversation is None or status != 200:
            return result
        if not conversation.inbound(message_id):
            note = "no transcript: the server stores messages in another database than the one configured here"
            return replace(result, note=note)
        deadline = time.monotonic() + timeout
        while conversation.inbound(message_id).get("status") == "pending" and time.monotonic() < deadline:
            time.sleep(POLL_INTERVAL)
        result = conversation.result(message, message_id, status, after_turn=after_turn, settle=False)
        if result.message_status == "pending" and result.mode == "bot":
            return replace(result, note=f"no turn within {timeout:g} s: is a worker running?")
        return result
    finally:
        if db is not None:
            db.dispose()


def _post(target: str, body: bytes, signature: str, http: httpx.Client | None) -> httpx.Response:
    headers = {"X-Hub-Signature-256": signature, "Content-Type": "application/json"}
    client = http or httpx.Client(timeout=10.0)
    try:
        return client.post(target, content=body, headers=headers)
    except httpx.HTTPError as exc:
        raise ChannelError(f"cannot reach {target}: {type(exc).__name__}: {exc}") from None
    finally:
        if http is None:
            client.close()


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json().get("error", {})
        return str(error.get("message") or response.reason_phrase)
    except (ValueError, AttributeError):
        return response.reason_phrase or f"HTTP {response.status_code}"


def _server_database(settings: Settings) -> tuple[sa.Engine | None, str | None]:
    """The configured database if it is usable (it may be the server's), else None and why not."""
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
