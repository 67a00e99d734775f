"""Console pages that read: the inbox (waiting first) and one conversation, each with a fragment for live updates.

The fragments (``/console/inbox/rows``, ``/console/conversations/<id>/thread``) are the same HTML the pages embed;
console.js fetches them every few seconds and swaps them in. Without JavaScript the pages are complete and a
reload shows the news.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flask import Blueprint, current_app, render_template, request

from chatops.db.conversations import (
    ConversationFilter,
    InvalidCursorError,
    conversation_detail,
    list_conversations,
    waiting_conversations,
)
from chatops.db.notes import list_notes
from chatops.db.thread import outbound_bodies, turn_traces
from chatops.web.auth import Role
from chatops.web.console.sessions import current_staff, staff_required
from chatops.web.state import web_state

WAITING_LIMIT = 200
OTHERS_LIMIT = 50
WINDOW = timedelta(hours=24)  # Meta's customer-service window, shown on the conversation page
CHANNELS = ("whatsapp", "messenger")
MODES = ("bot", "human", "paused")


def waited(since: datetime | None, now: datetime) -> str:
    """How long, short: 45s, 12m, 3h 5m, 30h, 2d 4h."""
    if since is None:
        return ""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:  # "24h" reads better than "1d" for the 24-hour window
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def _filters() -> dict[str, str | None]:
    state = web_state(current_app)
    channel = request.args.get("channel") or None
    stage = request.args.get("stage") or None
    mode = request.args.get("mode") or None
    return {
        "channel": channel if channel in CHANNELS else None,
        "stage": stage if stage in getattr(state.bot, "stages", {}) else None,
        "mode": mode if mode in MODES else None,
    }


def inbox_data() -> dict[str, Any]:
    """Under the request's filters: the :data:`WAITING_LIMIT` longest-waiting conversations and how many wait, and
    a page of the others (newest first; ``?cursor=`` from the previous page's "Older" link)."""
    state = web_state(current_app)
    filters = _filters()
    chosen = ConversationFilter(channel=filters["channel"], stage=filters["stage"], mode=filters["mode"])
    waiting = waiting_conversations(state.db, filters=chosen, limit=WAITING_LIMIT)
    others_filter = ConversationFilter(channel=chosen.channel, stage=chosen.stage, mode=chosen.mode, waiting=False)
    cursor = request.args.get("cursor") or None
    try:
        others = list_conversations(state.db, filters=others_filter, limit=OTHERS_LIMIT, cursor=cursor)
    except InvalidCursorError:  # an edited or stale link: start at the newest
        cursor = None
        others = list_conversations(state.db, filters=others_filter, limit=OTHERS_LIMIT)
    return {
        "waiting": waiting.items,
        "waiting_total": waiting.total,
        "others": others.items,
        "older": others.next_cursor,
        "paged": cursor is not None,
        "filters": filters,
        "filter_args": {name: value for name, value in filters.items() if value},  # for the paging links
        "now": state.clock(),
    }


def waiting_count() -> int:
    """How many conversations wait for a person (any filter), for the badge in the header."""
    state = web_state(current_app)
    return waiting_conversations(state.db, filters=ConversationFilter(), limit=1).total


def _rows_response(data: dict[str, Any]) -> Any:
    response = current_app.make_response(render_template("console/_inbox_rows.html", **data))
    response.headers["X-Waiting-Count"] = str(data["waiting_total"])
    return response


@staff_required(Role.VIEWER)
def inbox() -> str:
    """The inbox page."""
    state = web_state(current_app)
    return render_template(
        "console/inbox.html",
        **inbox_data(),
        channels=CHANNELS,
        modes=MODES,
        stages=list(getattr(state.bot, "stages", {})),
    )


@staff_required(Role.VIEWER)
def inbox_rows() -> Any:
    """The inbox's rows alone (live updates), with the waiting count in ``X-Waiting-Count``."""
    return _rows_response(inbox_data())


TICKS = {"pending": "🕓", "sending": "🕓", "sent": "✓", "delivered": "✓✓", "read": "✓✓", "failed": "⚠"}


def thread_data(conversation_id: int) -> dict[str, Any]:
    """Everything the conversation page shows: messages as the user saw them, traces, state, notes, window."""
    state = web_state(current_app)
    detail = conversation_detail(state.db, conversation_id)
    bodies = outbound_bodies(state.db, conversation_id, [m["id"] for m in detail.messages if m["direction"] == "out"])
    traces = turn_traces(state.db, conversation_id)
    shown: set[int] = set()
    messages = []
    for message in detail.messages:
        item = dict(message)
        if message["direction"] == "out":
            body = bodies.get(message["id"], {})
            item["buttons"] = [b.get("title", "") for b in body.get("buttons") or []]
            item["list_button"] = body.get("list_button")
            item["template"] = body.get("template")
            item["tick"] = TICKS.get(message["status"], message["status"])
            turn_id = message.get("turn_id")
            if turn_id in traces and turn_id not in shown:
                item["trace"] = traces[turn_id]  # folded under the first reply of its turn
                shown.add(turn_id)
        messages.append(item)
    conversation = detail.conversation
    now = state.clock()
    last_in = conversation["last_inbound_at"]
    closes = last_in + WINDOW if last_in is not None else None
    return {
        "conversation": conversation,
        "messages": messages,
        "notes": list_notes(state.db, conversation_id),
        "now": now,
        "window_open": closes is not None and now < closes,
        "window_closes": closes,
        "window_left": waited(now, closes) if closes is not None and now < closes else "",
    }


@staff_required(Role.VIEWER)
def conversation(conversation_id: int) -> str:
    """One conversation: the thread, the turn traces folded, the state values, notes and (by role) actions."""
    state = web_state(current_app)
    live = current_staff()
    assert live is not None
    bot = state.bot
    stages = [name for name, spec in getattr(bot, "stages", {}).items() if not getattr(spec, "handoff", False)]
    return render_template(
        "console/conversation.html",
        **thread_data(conversation_id),
        stages=stages,
        start=getattr(getattr(bot, "bot", None), "start", None),
        has_template=getattr(bot, "whatsapp_template", None) is not None,
        can_act=Role(live.account.role).rank >= Role.OPERATOR.rank,
    )


@staff_required(Role.VIEWER)
def thread(conversation_id: int) -> str:
    """The conversation's thread alone (live updates)."""
    return render_template("console/_thread.html", **thread_data(conversation_id))


def register(blueprint: Blueprint) -> None:
    blueprint.add_url_rule("/", "inbox", inbox)
    blueprint.add_url_rule("/inbox/rows", "inbox_rows", inbox_rows)
    blueprint.add_url_rule("/conversations/<int:conversation_id>", "conversation", conversation)
    blueprint.add_url_rule("/conversations/<int:conversation_id>/thread", "thread", thread)
