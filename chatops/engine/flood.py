"""Per-user flood control on inbound processing (stages.yaml ``bot.rate_limit``), and the shared limit storage.

A user who sends more than ``messages`` (e.g. ``10/minute``) gets one polite reply (``reply``, an inline Jinja
template with the static variables and ``user``) per window; the excess messages are stored, marked ``skipped``
and never reach the AI — which protects the OpenAI bill. Counting uses the ``limits`` library on
``CHATOPS_RATE_LIMIT_STORAGE``: ``memory://`` counts per process, ``redis://…`` across every worker process.

:func:`shared_storage` gives one storage per URI per process, so the worker threads and the web app of one
process count together.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import FixedWindowRateLimiter

from chatops.channels.events import OutboundMessage
from chatops.config.bot_schema import BotDefinition
from chatops.db.inbox import Conversation
from chatops.errors import ConfigError, TemplateError
from chatops.templating.builtin import user_variables
from chatops.templating.providers import UserInfo
from chatops.templating.sandbox import InlineTemplate
from chatops.text import clean_text

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def shared_storage(uri: str) -> Storage:
    """The process's storage for ``uri``: worker threads count together. Raises ConfigError."""
    return storage(uri)


def storage(uri: str) -> Storage:
    """A new storage for ``uri`` (``memory://``, ``redis://host:port/db``). Raises ConfigError."""
    try:
        made = storage_from_string(uri)
    except Exception as exc:  # limits raises ConfigurationError or the driver's import error
        raise ConfigError(
            f"CHATOPS_RATE_LIMIT_STORAGE: {exc}", hint="memory:// (one process) or redis://host:6379 (shared)"
        ) from None
    assert isinstance(made, Storage)  # the synchronous storages: the async:// schemes are not offered
    return made


@dataclass
class FloodControl:
    """Decides, per turn, whether a user's messages go to the bot or are held back as a flood."""

    storage_uri: str
    namespace: str = "chatops"

    def __post_init__(self) -> None:
        self._limiter = FixedWindowRateLimiter(shared_storage(self.storage_uri))

    def admit(self, bot: BotDefinition, conversation: Conversation, count: int) -> tuple[bool, OutboundMessage | None]:
        """(True, None): answer as usual. (False, reply): a flood; send ``reply`` (once per window, else None).

        A storage outage admits (logged): a broken Redis must not silence the bot.
        """
        spec = bot.bot.rate_limit
        if spec is None:
            return True, None
        item = parse(spec.messages)
        who = (self.namespace, "user", conversation.channel, conversation.account_id, conversation.user_id)
        try:
            if self._limiter.hit(item, *who, cost=count):
                return True, None
            first = self._limiter.hit(_once_per(item), *who, "told")
        except Exception as exc:
            log.warning("rate limit storage unavailable, message admitted: %s", exc)
            return True, None
        return False, (self._reply(bot, conversation) if first else None)

    def _reply(self, bot: BotDefinition, conversation: Conversation) -> OutboundMessage | None:
        spec = bot.bot.rate_limit
        assert spec is not None
        user = UserInfo(id=conversation.user_id, channel=conversation.channel, name=conversation.user_name)
        values = {**bot.variables, "user": user_variables(user, reveal_phone=False)}
        try:
            text = InlineTemplate(spec.reply, label="bot.rate_limit.reply").render(values)
        except TemplateError as exc:
            log.warning("bot.rate_limit.reply: %s", exc)
            return None
        return OutboundMessage(text=clean_text(text))


def _once_per(item: RateLimitItem) -> RateLimitItem:
    """One per ``item``'s window."""
    return type(item)(1, item.multiples, item.namespace)
