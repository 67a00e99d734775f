"""Console actions on a conversation, for operators: reply (or the template message when the 24-hour window is
closed), take over, pause, hand back at a stage, internal note.

Each calls the library function the admin API calls (chatops.engine.handoff, chatops.db.notes), then redirects
back to the conversation (POST/redirect/GET, so a reload does not send twice). Every POST is audited as
``staff:<email>`` with its outcome; a refusal (closed window, unknown stage …) is shown on the page.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, redirect, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from chatops.db.conversations import ConversationNotFoundError
from chatops.db.notes import add_note
from chatops.engine import handoff
from chatops.errors import ChatopsError
from chatops.web.auth import Role
from chatops.web.console.sessions import actor, record, staff_required
from chatops.web.state import web_state


def _act(conversation_id: int, action: str, run: Any, done: str, **details: Any) -> BaseResponse:
    target = f"/conversations/{conversation_id}"
    try:
        extra = run() or {}
    except ConversationNotFoundError:
        record(f"console.{action}", target, "rejected", message="not found", **details)
        raise
    except ChatopsError as exc:
        record(f"console.{action}", target, "rejected", message=exc.message, **details)
        flash(exc.message + (f" {exc.hint}" if exc.hint else ""), "error")
    else:
        record(f"console.{action}", target, "ok", **details, **extra)
        flash(done, "ok")
    return redirect(url_for("console.conversation", conversation_id=conversation_id))


@staff_required(Role.OPERATOR)
def reply(conversation_id: int) -> BaseResponse:
    """Queue the operator's text (or the bot's whatsapp_template with ``template=1``) in the outbox."""
    state = web_state(current_app)
    template = request.form.get("template") == "1"
    text = request.form.get("text")

    def run() -> None:
        handoff.send_operator_message(
            state.db,
            state.bot,
            conversation_id,
            operator=actor(),
            now=state.clock(),
            text=None if template else text,
            template=template,
        )

    return _act(conversation_id, "reply", run, "Sent." if not template else "Template message sent.", template=template)


@staff_required(Role.OPERATOR)
def takeover(conversation_id: int) -> BaseResponse:
    state = web_state(current_app)
    return _act(
        conversation_id,
        "takeover",
        lambda: handoff.take_over(state.db, conversation_id, now=state.clock()),
        "You have the conversation; the bot stops answering it.",
    )


@staff_required(Role.OPERATOR)
def pause(conversation_id: int) -> BaseResponse:
    state = web_state(current_app)
    return _act(
        conversation_id,
        "pause",
        lambda: handoff.pause(state.db, conversation_id, now=state.clock()),
        "The bot is paused for this conversation.",
    )


@staff_required(Role.OPERATOR)
def handback(conversation_id: int) -> BaseResponse:
    state = web_state(current_app)
    stage = request.form.get("stage") or None

    def run() -> dict[str, Any]:
        done = handoff.hand_back(state.db, state.bot, conversation_id, now=state.clock(), stage=stage)
        return {"stage": done.stage, "skipped": done.skipped}

    return _act(conversation_id, "handback", run, f"Handed back to the bot at {stage or 'the start'}.")


@staff_required(Role.OPERATOR)
def note(conversation_id: int) -> BaseResponse:
    state = web_state(current_app)
    text = request.form.get("text", "")
    return _act(
        conversation_id,
        "note",
        lambda: {"note": add_note(state.db, conversation_id, author=actor(), text=text, now=state.clock())},
        "Note added.",
    )


def register(blueprint: Blueprint) -> None:
    base = "/conversations/<int:conversation_id>"
    for name, view in (
        ("reply", reply),
        ("takeover", takeover),
        ("pause", pause),
        ("handback", handback),
        ("note", note),
    ):
        blueprint.add_url_rule(f"{base}/{name}", name, view, methods=["POST"])
