"""``/api/v1/conversations/{id}/messages|pause|handback``: the human side of a handoff (chatops.engine.handoff)."""

from __future__ import annotations

from flask import Response, current_app, jsonify
from flask_openapi3.blueprint import APIBlueprint

from chatops.db.conversations import get_conversation
from chatops.engine import handoff
from chatops.web.api import models
from chatops.web.api.conversations import summary
from chatops.web.api.routes import operation
from chatops.web.auth import Role, audit_details, current_caller
from chatops.web.state import web_state

api = APIBlueprint("handoff", __name__)


@operation(
    api,
    "post",
    "/conversations/<int:conversation_id>/messages",
    Role.OPERATOR,
    answer=models.OperatorMessageSent,
    status=201,
    conflicts=True,
)
def reply_view(path: models.ConversationPath, body: models.OperatorMessage, **_url: object) -> tuple[Response, int]:
    """Send an operator message to the user (through the outbox, in order with the bot's).

    Within 24 hours of the user's last message any text may be sent; after that the answer is 409 `window_closed`
    and only `{"template": true}` (the bot's whatsapp_template) goes out. The bot stops answering this
    conversation (mode `human`) until it is handed back.
    """
    state = web_state(current_app)
    operator = current_caller().actor
    audit_details(template=body.template)
    outbound_id = handoff.send_operator_message(
        state.db,
        state.bot,
        path.conversation_id,
        operator=operator,
        now=state.clock(),
        text=body.text,
        template=body.template,
    )
    sent = models.OperatorMessageSent(
        id=outbound_id, conversation_id=path.conversation_id, status="pending", sent_by=operator
    )
    return jsonify(sent.model_dump(mode="json")), 201


@operation(api, "post", "/conversations/<int:conversation_id>/pause", Role.OPERATOR, answer=models.ConversationSummary)
def pause_view(path: models.ConversationPath, **_url: object) -> Response:
    """Stop the bot for this conversation (mode `paused`): its messages are stored, not answered, until hand-back."""
    state = web_state(current_app)
    handoff.pause(state.db, path.conversation_id, now=state.clock())
    return jsonify(summary(get_conversation(state.db, path.conversation_id)).model_dump(mode="json"))


@operation(api, "post", "/conversations/<int:conversation_id>/handback", Role.OPERATOR, answer=models.HandBackDone)
def handback_view(path: models.ConversationPath, body: models.HandBackRequest, **_url: object) -> Response:
    """Give the conversation back to the bot at a stage (default: the bot's start).

    Messages that arrived while a person had it are marked skipped (the bot does not answer a backlog); the
    user's next message is answered by the bot.
    """
    state = web_state(current_app)
    done = handoff.hand_back(state.db, state.bot, path.conversation_id, now=state.clock(), stage=body.stage)
    audit_details(stage=done.stage, skipped=done.skipped)
    answer = models.HandBackDone(conversation_id=done.conversation_id, stage=done.stage, skipped=done.skipped)
    return jsonify(answer.model_dump(mode="json"))
