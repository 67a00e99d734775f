"""The in-process simulator: the real Flask app (test client) and the real worker, on the configured database."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

from chatops.channels import sign
from chatops.channels.events import Channel
from chatops.config.bot_schema import BotDefinition
from chatops.config.settings import Settings, channel_credentials
from chatops.db.connect import check_connection, create_db_engine
from chatops.db.migrate import Revision, ensure_schema_current, migrate, migration_status
from chatops.engine.runtime import build_runtime
from chatops.engine.turn import BotRuntime
from chatops.engine.worker import Worker, worker_name
from chatops.errors import ChannelError
from chatops.web.app import create_app
from chatops.web.simulator.bodies import UserInput, build_webhook
from chatops.web.simulator.records import UserConversation, account_id_for
from chatops.web.simulator.results import SimulationResult
from chatops.web.state import utc_now

DEFAULT_USER_ID = "15550001234"  # 555-01xx: a fictional number
DEFAULT_USER_NAME = "Alex"
MAX_TURNS_PER_MESSAGE = 100  # older pending messages of the conversation are answered first, one turn each


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
    """Bring a SQLite database to head and return the revisions applied; on PostgreSQL only check.

    Raises StorageError when unreachable, SchemaOutOfDateError (hint: ``chatops migrate``) when PostgreSQL is behind.
    """
    check_connection(db)
    if migration_status(db).up_to_date:
        return []
    if db.dialect.name != "sqlite":
        ensure_schema_current(db)
    return migrate(db)[1]


def frozen_clock(at: datetime | None, bot: BotDefinition) -> Callable[[], datetime]:
    """A clock stopped at ``at`` (naive: in the bot's timezone), or the real clock when ``at`` is None."""
    if at is None:
        return utc_now
    moment = at if at.tzinfo is not None else at.replace(tzinfo=bot.bot.tzinfo)
    return lambda: moment


class Simulator:
    """Messages from one user on one channel, through an in-process app and worker sharing one database.

    ``at`` freezes the clock (see :func:`frozen_clock`): the app, the worker and the settling of replies use it;
    ``clock`` replaces it outright (``chatops test`` gives each case its own). ``runtime`` replaces the one built
    from ``settings`` (templates, providers, AI). :meth:`user` adds other users on the same app and database.
    A SQLite database is migrated to head (``migrated`` lists what ran). Use as a context manager.
    Raises StorageError/SchemaOutOfDateError (see :func:`prepare_schema`), ConfigError (AI settings).
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
        clock: Callable[[], datetime] | None = None,
        runtime: BotRuntime | None = None,
    ) -> None:
        self.settings, self._secret = simulation_settings(settings, channel)
        self.clock = clock or frozen_clock(at, bot)
        self._account_id = account_id_for(settings, channel)
        self._own_db = db is None
        self.db = db or create_db_engine(self.settings.database_url, pool_size=2)
        self.conversation = UserConversation(
            db=self.db,
            bot=bot,
            settings=self.settings,
            channel=channel,
            account_id=self._account_id,
            user_id=user_id,
            user_name=user_name if channel == "whatsapp" else None,  # Messenger webhooks carry no names
            clock=self.clock,
        )
        try:
            self.migrated = prepare_schema(self.db)
            self.app = create_app(self.settings, bot, db=self.db, clock=self.clock)
            self.runtime = runtime or build_runtime(self.settings, bot)
        except BaseException:
            self._dispose()
            raise
        self._default = SimulatedUser(self, self.conversation)

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the providers' clients, and the database engine when this simulator made it."""
        self.runtime.variables.runner.close()
        self._dispose()

    def _dispose(self) -> None:
        if self._own_db:
            self.db.dispose()

    def user(self, user_id: str, user_name: str | None = DEFAULT_USER_NAME) -> SimulatedUser:
        """Another user on the same channel, app, worker code and database (its own test client and worker)."""
        conversation = dataclasses.replace(
            self.conversation, user_id=user_id, user_name=user_name if self.conversation.channel == "whatsapp" else None
        )
        return SimulatedUser(self, conversation)

    def send(self, message: UserInput) -> SimulationResult:
        """What :meth:`SimulatedUser.send` does, for this simulator's own user."""
        return self._default.send(message)

    def reset(self) -> bool:
        """Start this user's conversation afresh (see :meth:`UserConversation.reset`); False when there is none."""
        return self.conversation.reset()


class SimulatedUser:
    """One user of a :class:`Simulator`, with a test client and a worker of its own (so users can run in threads)."""

    def __init__(self, simulator: Simulator, conversation: UserConversation) -> None:
        self.conversation = conversation
        self._secret = simulator._secret
        self.client = simulator.app.test_client()
        self.worker = Worker(
            simulator.runtime,
            simulator.db,
            simulator.settings,
            clock=simulator.clock,
            name=f"simulate@{worker_name()}:{conversation.user_id}",
        )

    def send(self, message: UserInput, *, on_accepted: Callable[[], None] | None = None) -> SimulationResult:
        """Post ``message`` through the webhook route, run the worker, settle the replies; return what happened.

        ``on_accepted`` runs after the route accepted the webhook, before the worker: ``chatops test`` moves its
        clock there to play workers that answer late (stopped, or an outage).
        Writes the inbound message, the turn(s), and outbound rows settled ``sent``/``failed`` (never ``pending``).
        Raises ChannelError when the route refuses the webhook, StorageError when the database fails.
        """
        conversation = self.conversation
        after_turn = conversation.last_turn_id()
        body, message_id = build_webhook(
            conversation.channel,
            message,
            account_id=conversation.account_id,
            user_id=conversation.user_id,
            user_name=conversation.user_name,
            at=conversation.clock(),
            offer=conversation.button_offer(message.button),
        )
        response = self.client.post(
            f"/webhooks/{conversation.channel}",
            data=body,
            headers={"X-Hub-Signature-256": sign(body, self._secret), "Content-Type": "application/json"},
        )
        if response.status_code != 200:
            error = (response.get_json(silent=True) or {}).get("error", {})
            raise ChannelError(f"the webhook route answered {response.status_code}: {error.get('message', '')}")
        if on_accepted is not None:
            on_accepted()
        for _ in range(MAX_TURNS_PER_MESSAGE):
            stored = conversation.inbound(message_id)
            if stored.get("status") != "pending" or not self.worker.work_once(only=stored["conversation_id"]):
                break
        return conversation.result(message, message_id, response.status_code, after_turn=after_turn, settle=True)
