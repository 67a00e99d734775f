"""``chatops conversations``: list, show, reply, hand back — the same library calls as the admin API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.config.settings import Settings

MODES = ("bot", "human", "paused")

conversations_app = typer.Typer(
    name="conversations",
    help="Look at conversations and answer the ones a person has.\n\nExample: chatops conversations list --mode human",
    no_args_is_help=True,
)


def _setup(ctx: typer.Context, *, bot: bool = False) -> tuple[Settings, sa.Engine]:
    from chatops.cli.app import database_engine, settings_from

    uses = ("database_url", "log_level", "stages", "templates") if bot else ("database_url", "log_level")
    settings = settings_from(ctx, uses=uses)
    return settings, database_engine(ctx, settings=settings)


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@conversations_app.command("list")
def list_command(
    ctx: typer.Context,
    mode: Annotated[
        str | None,
        typer.Option("--mode", parser=choice_parser(MODES), metavar=choice_metavar(MODES), help="Only this mode."),
    ] = None,
    waiting: Annotated[bool, typer.Option("--waiting", help="Only those waiting for a person.")] = False,
    channel: Annotated[str | None, typer.Option("--channel", help="whatsapp or messenger.")] = None,
    stage: Annotated[str | None, typer.Option("--stage", help="Only those at this stage.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List conversations, the most recently updated first.

    Example: chatops conversations list --mode human
    """
    from chatops.db.conversations import ConversationFilter, list_conversations

    _, engine = _setup(ctx)
    filters = ConversationFilter(channel=channel, stage=stage, mode=mode, waiting=True if waiting else None)
    page = list_conversations(engine, filters=filters, limit=limit)
    if as_json:
        output.print_json(page.items)
        return
    if not page.items:
        output.info("no conversations")
    for row in page.items:
        name = row["user_name"] or row["user_id"]
        output.info(
            f"{row['id']:>6}  {row['channel']:<9} {row['mode']:<6} {row['stage'] or '-':<16} {name:<24} "
            f"updated {_time(row['updated_at'])}"
        )


@conversations_app.command("show")
def show_command(
    ctx: typer.Context,
    conversation_id: Annotated[int, typer.Argument(help="The conversation's id (see `conversations list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show one conversation: messages both ways with delivery statuses, and the bot's turns.

    Example: chatops conversations show 42
    """
    from chatops.db.conversations import conversation_detail

    _, engine = _setup(ctx)
    detail = conversation_detail(engine, conversation_id)
    if as_json:
        output.print_json({**detail.conversation, "messages": detail.messages, "turns": detail.turns})
        return
    c = detail.conversation
    output.info(f"conversation {c['id']}  {c['channel']}  {c['user_name'] or c['user_id']}", style="bold")
    output.info(
        f"mode {c['mode']}, stage {c['stage'] or '-'}, {c['turn_count']} turns, updated {_time(c['updated_at'])}"
    )
    output.info("")
    for message in detail.messages:
        output.info(_message_line(message), style=None if message["direction"] == "in" else "cyan")
    if detail.turns:
        output.info("")
        output.info("turns:", style="bold")
    for turn in detail.turns:
        usage = turn["usage"] or {}
        tokens = f", {usage.get('total_tokens')} tokens" if usage.get("total_tokens") else ""
        latency = f", {turn['latency_ms']:.0f} ms" if turn["latency_ms"] else ""
        model = f" {turn['model']}{tokens}{latency}" if turn["model"] else ""
        error = f"  error: {turn['error']}" if turn["error"] else ""
        output.info(
            f"  #{turn['id']} {_time(turn['started_at'])}  {turn['stage_before']} → {turn['stage_after']}{model}{error}"
        )


def _message_line(message: dict[str, Any]) -> str:
    if message["direction"] == "in":
        who = "user"
        status = message["status"]
    else:
        who = f"operator {message['sent_by']}" if message.get("sent_by") else "bot"
        status = message["status"] + (f" (error {message['error_code']})" if message.get("error_code") else "")
    arrow = "←" if message["direction"] == "in" else "→"
    text = (message["text"] or f"[{message['kind']}]").replace("\n", " ⏎ ")
    return f"{_time(message['at'])} {arrow} {who}: {text}  [{status}]"


def _operator() -> str:
    import getpass

    return f"cli:{getpass.getuser()}"


def _audit(engine: sa.Engine, action: str, conversation_id: int, **details: Any) -> None:
    from chatops.db import audit

    audit.record(
        engine,
        actor=_operator(),
        action=action,
        target=f"conversation:{conversation_id}",
        outcome="ok",
        now=datetime.now(UTC),
        details=details or None,
    )


@conversations_app.command("reply")
def reply_command(
    ctx: typer.Context,
    conversation_id: Annotated[int, typer.Argument(help="The conversation's id.")],
    text: Annotated[str | None, typer.Argument(help="The message (within 24 hours of the user's last one).")] = None,
    template: Annotated[
        bool, typer.Option("--template", help="Send the bot's whatsapp_template instead (outside the window).")
    ] = False,
) -> None:
    """Send an operator message to the user through the outbox; the bot stops answering until hand-back.

    Example: chatops conversations reply 42 "Hi Ada, I have refunded your order."
    """
    from chatops.config.bot import load_bot
    from chatops.engine.handoff import send_operator_message

    settings, engine = _setup(ctx, bot=True)
    bot = load_bot(settings.stages, templates_dir=settings.templates_dir)
    outbound_id = send_operator_message(
        engine, bot, conversation_id, operator=_operator(), now=datetime.now(UTC), text=text, template=template
    )
    _audit(engine, "conversations.reply", conversation_id, template=template)
    output.info(f"Queued message {outbound_id} to conversation {conversation_id}; the sender delivers it.")


@conversations_app.command("pause")
def pause_command(
    ctx: typer.Context, conversation_id: Annotated[int, typer.Argument(help="The conversation's id.")]
) -> None:
    """Stop the bot for one conversation: its messages are stored, not answered, until hand-back.

    Example: chatops conversations pause 42
    """
    from chatops.engine.handoff import pause

    _, engine = _setup(ctx)
    pause(engine, conversation_id, now=datetime.now(UTC))
    _audit(engine, "conversations.pause", conversation_id)
    output.info(f"Paused the bot for conversation {conversation_id}.")


@conversations_app.command("handback")
def handback_command(
    ctx: typer.Context,
    conversation_id: Annotated[int, typer.Argument(help="The conversation's id.")],
    stage: Annotated[str | None, typer.Option("--stage", help="Where the bot resumes (default: the start).")] = None,
) -> None:
    """Give a conversation back to the bot; messages that arrived meanwhile are skipped, not answered at once.

    Example: chatops conversations handback 42 --stage triage
    """
    from chatops.config.bot import load_bot
    from chatops.engine.handoff import hand_back

    settings, engine = _setup(ctx, bot=True)
    bot = load_bot(settings.stages, templates_dir=settings.templates_dir)
    done = hand_back(engine, bot, conversation_id, now=datetime.now(UTC), stage=stage)
    _audit(engine, "conversations.handback", conversation_id, stage=done.stage, skipped=done.skipped)
    output.info(
        f"Conversation {conversation_id} is back with the bot at stage {done.stage!r}; "
        f"{done.skipped} message(s) that arrived meanwhile will not be answered."
    )
