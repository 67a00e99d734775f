"""``/api/v1/conversations``: list with filters and a cursor, and one conversation in detail."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, jsonify
from flask_openapi3.blueprint import APIBlueprint

from chatops.db.conversations import ConversationFilter, conversation_detail, list_conversations
from chatops.web.api import models
from chatops.web.api.routes import operation
from chatops.web.auth import Role
from chatops.web.state import web_state

api = APIBlueprint("conversations", __name__)


def is_waiting(row: dict[str, Any]) -> bool:
    """The same rule as chatops.db.conversations.waiting_clause, for one row."""
    inbound, operator = row["last_inbound_at"], row["last_operator_at"]
    return row["mode"] != "bot" and inbound is not None and (operator is None or inbound > operator)


def summary(row: dict[str, Any]) -> models.ConversationSummary:
    return models.ConversationSummary.model_validate({**row, "waiting": is_waiting(row)})


@operation(api, "get", "/conversations", Role.VIEWER, answer=models.ConversationList)
def list_view(query: models.ConversationQuery) -> Response:
    """List conversations, the most recently updated first.

    Filters combine (AND). Pages: pass `next_cursor` back as `cursor` until it is null.
    """
    page = list_conversations(
        web_state(current_app).db,
        filters=ConversationFilter(
            channel=query.channel,
            stage=query.stage,
            mode=query.mode,
            waiting=query.waiting,
            updated_since=query.updated_since,
        ),
        limit=query.limit,
        cursor=query.cursor,
    )
    body = models.ConversationList(items=[summary(row) for row in page.items], next_cursor=page.next_cursor)
    return jsonify(body.model_dump(mode="json"))


@operation(api, "get", "/conversations/<int:conversation_id>", Role.VIEWER, answer=models.ConversationDetail)
def detail_view(path: models.ConversationPath, **_url: object) -> Response:
    """One conversation: its state, the newest 200 messages both ways with delivery statuses, and its turns."""
    detail = conversation_detail(web_state(current_app).db, path.conversation_id)
    body = models.ConversationDetail.model_validate(
        {
            **summary(detail.conversation).model_dump(),
            "state": detail.conversation["state"] or {},
            "messages": detail.messages,
            "turns": detail.turns,
        }
    )
    return jsonify(body.model_dump(mode="json"))
