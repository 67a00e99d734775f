"""The approved WhatsApp template sent instead of a reply once the 24-hour customer-service window has closed.

Its ``params`` (stages.yaml ``whatsapp_template``) are Jinja templates. They are rendered when the turn makes its
replies, with the built-ins and static variables the turn saw (what ``lint-templates`` checks them against), and
stored with each WhatsApp reply (``OutboundMessage.window_params``): the sender only learns at send time whether
the window is still open, and by then the turn's context is gone.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from chatops.channels.events import OutboundMessage
from chatops.config.bot_schema import BotDefinition
from chatops.errors import TemplateError
from chatops.templating.sandbox import InlineTemplate

log = logging.getLogger(__name__)

UNRENDERED_PARAMS = "the whatsapp_template parameters could not be rendered for this reply (see the worker's log)"


def with_window_params(
    bot: BotDefinition,
    replies: Sequence[OutboundMessage],
    variables: Callable[[], Mapping[str, Any]],
    *,
    channel: str,
) -> list[OutboundMessage]:
    """``replies`` with the window template's parameters rendered into each (WhatsApp, template with params).

    ``variables`` is called only when there is something to render. A parameter that fails to render is logged
    and the replies are returned without parameters: the sender then refuses to send the template rather than
    send Jinja source to the user.
    """
    template = bot.whatsapp_template
    if channel != "whatsapp" or template is None or not template.params or not replies:
        return list(replies)
    try:
        values = variables()
        params = tuple(_compiled(index, source).render(values) for index, source in enumerate(template.params))
    except TemplateError as exc:
        log.warning("whatsapp_template params: %s", exc)
        return list(replies)
    return [dataclasses.replace(reply, window_params=params) for reply in replies]


def window_message(template: OutboundMessage, reply: OutboundMessage) -> OutboundMessage | None:
    """What to send instead of ``reply`` outside the window: ``template`` with the reply's rendered parameters.

    None when the template has parameters and the reply carries none (they failed to render).
    """
    if not template.template_params:
        return template
    if reply.window_params is None:
        return None
    return dataclasses.replace(template, template_params=reply.window_params)


@functools.lru_cache(maxsize=64)
def _compiled(index: int, source: str) -> InlineTemplate:
    return InlineTemplate(source, label=f"whatsapp_template params[{index}]")
