"""``chatops simulate``: send a message as a user would and print what the bot answers (see docs/simulate.md)."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser

if TYPE_CHECKING:
    from chatops.channels.events import Channel
    from chatops.web.simulator import SimulatedReply, SimulatedTurn, SimulationResult, UserInput

NEW_STAGE = "(new)"
_VALUE_WIDTH = 60  # characters of one state value in the transcript (--json has them whole)
INTERACTIVE_HELP = "Type a message, or /button ID, /location LAT,LON, /fresh, /quit (or end of input)."


class ChannelName(StrEnum):
    whatsapp = "whatsapp"
    messenger = "messenger"


def simulate_command(
    ctx: typer.Context,
    message: Annotated[
        str | None, typer.Argument(metavar="MESSAGE", help="What the user writes.", show_default=False)
    ] = None,
    channel: Annotated[
        ChannelName,
        typer.Option(
            "--channel",
            parser=choice_parser(ChannelName),
            metavar=choice_metavar(ChannelName),
            help="Which channel the user writes on.",
        ),
    ] = ChannelName.whatsapp,
    button: Annotated[
        str | None, typer.Option("--button", metavar="ID", help="Press the button (or list row) with this id.")
    ] = None,
    location: Annotated[
        str | None, typer.Option("--location", metavar="LAT,LON", help="Share a location, e.g. 52.52,13.40.")
    ] = None,
    user: Annotated[
        str | None,
        typer.Option("--from", metavar="USER", help="The user's wa_id or PSID.", show_default="15550001234"),
    ] = None,
    name: Annotated[
        str | None, typer.Option("--name", help="The user's profile name (WhatsApp only).", show_default="Alex")
    ] = None,
    at: Annotated[
        str | None,
        typer.Option(
            "--at", metavar="TIME", help="Freeze the clock at this ISO 8601 time (no offset: the bot's timezone)."
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option("--fresh", help="Start this user's conversation again (history is kept).")] = (
        False
    ),
    interactive: Annotated[
        bool, typer.Option("--interactive", "-i", help="Chat: read messages from stdin until /quit.")
    ] = False,
    url: Annotated[
        str | None, typer.Option("--url", help="Post to a running server instead (e.g. http://localhost:8000).")
    ] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="With --url: seconds to wait for the turn.", min=0)] = (
        30.0
    ),
    as_json: Annotated[bool, typer.Option("--json", help="Print the turn as JSON (one line per message with -i).")] = (
        False
    ),
) -> None:
    """Send a message as a user would, through the real webhook route and worker; print the bot's answer.

    The conversation is kept in the database between runs; nothing is ever sent to Meta.

    Example: chatops simulate "where is my order?" ; chatops simulate --button hours --at 2026-03-02T10:00
    """
    from chatops.cli.app import settings_from
    from chatops.config.bot import load_bot
    from chatops.web import simulator

    first = _user_input(message, button, location, required=not interactive)
    moment = _parse_at(at)
    if user is not None and not 0 < len(user.strip()) <= 64:
        raise typer.BadParameter("expected 1 to 64 characters", param_hint="--from")
    if url is not None and fresh:
        raise typer.BadParameter("--fresh works in-process only; the server owns its conversations", param_hint="--url")
    settings = settings_from(ctx)
    if settings.log_level != "DEBUG":  # httpx logs every request at INFO; simulate prints the one that matters
        logging.getLogger("httpx").setLevel(logging.WARNING)
    bot = load_bot(settings.stages, templates_dir=settings.templates)
    on: Channel = "messenger" if channel is ChannelName.messenger else "whatsapp"
    user_id = (user or simulator.DEFAULT_USER_ID).strip()
    user_name = name if name is not None else simulator.DEFAULT_USER_NAME
    show = _Printer(bot.bot.name, channel=on, as_json=as_json, lines=interactive)
    if url is not None:
        for sent in _inputs(first, interactive, show):
            result = simulator.send_to_server(
                settings, bot, url, sent, channel=on, user_id=user_id, user_name=user_name, at=moment, timeout=timeout
            )
            show.result(result, remote=url)
            if result.webhook_status != 200:
                raise typer.Exit(1)
        return
    with simulator.Simulator(settings, bot, channel=on, user_id=user_id, user_name=user_name, at=moment) as sim:
        if sim.migrated:
            output.stderr.print(
                f"Migrated the SQLite database to revision {sim.migrated[-1].id} "
                f"({len(sim.migrated)} migration{'s' if len(sim.migrated) > 1 else ''})."
            )
        if fresh:
            sim.reset()
        for sent in _inputs(first, interactive, show, reset=sim.reset):
            show.result(sim.send(sent))


def _user_input(text: str | None, button: str | None, location: str | None, *, required: bool) -> UserInput | None:
    from chatops.web.simulator import UserInput

    given = [name for name, value in (("MESSAGE", text), ("--button", button), ("--location", location)) if value]
    if len(given) > 1:
        raise typer.BadParameter(f"give one of MESSAGE, --button or --location, not {' and '.join(given)}")
    if not given:
        if required:
            raise typer.BadParameter("give a MESSAGE, --button ID or --location LAT,LON (or --interactive)")
        return None
    if location:
        return UserInput(location=parse_location(location))
    if button is not None:
        return UserInput(button=button.strip())
    return UserInput(text=text)


def parse_location(value: str) -> tuple[float, float]:
    """``LAT,LON`` in degrees. Raises BadParameter (exit 2) when malformed or out of range."""
    parts = value.replace(" ", "").split(",")
    try:
        latitude, longitude = (float(part) for part in parts)
    except ValueError:
        raise typer.BadParameter(
            f"expected LAT,LON in degrees such as 52.52,13.40, got {value!r}", param_hint="--location"
        ) from None
    if not (-90 <= latitude <= 90 and -180 <= longitude <= 180):
        raise typer.BadParameter(
            f"{value!r} is out of range: latitude -90..90, longitude -180..180", param_hint="--location"
        )
    return latitude, longitude


def _parse_at(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"expected an ISO 8601 time such as 2026-03-02T09:30 or 2026-03-02T09:30:00+01:00, got {value!r}",
            param_hint="--at",
        ) from None


def _inputs(
    first: UserInput | None, interactive: bool, show: _Printer, *, reset: Callable[[], object] | None = None
) -> Iterator[UserInput]:
    """The messages to send: ``first``, then with ``interactive`` one per line of stdin until ``/quit`` or EOF."""
    from chatops.web.simulator import UserInput

    if first is not None:
        yield first
    if not interactive:
        return
    tty = sys.stdin.isatty()
    if tty:
        output.info(INTERACTIVE_HELP, style="dim")
    while True:
        if tty:
            output.stdout.print(Text("> ", style="bold"), end="")
        line = sys.stdin.readline()
        if not line or line.strip() == "/quit":
            return
        command, _, argument = line.strip().partition(" ")
        try:
            if not command:
                continue
            if not command.startswith("/"):
                yield UserInput(text=line.strip())
            elif command == "/button" and argument.strip():
                yield UserInput(button=argument.strip())
            elif command == "/location":
                yield UserInput(location=parse_location(argument))
            elif command == "/fresh" and reset is not None:
                reset()
                show.line("(conversation started afresh)")
            else:
                show.line(f"cannot do {line.strip()!r} here. {INTERACTIVE_HELP}")
        except typer.BadParameter as exc:
            show.line(exc.message)


class _Printer:
    """Prints results as a transcript (what the user sees) or as JSON."""

    def __init__(self, bot_name: str, *, channel: str, as_json: bool, lines: bool) -> None:
        self.bot_name = bot_name
        self.channel = channel
        self.as_json = as_json
        self.lines = lines

    def line(self, message: str) -> None:
        if not self.as_json:
            output.info(message, style="dim")

    def result(self, result: SimulationResult, *, remote: str | None = None) -> None:
        if self.as_json:
            if self.lines:
                output.stdout.file.write(json.dumps(result.to_json(), ensure_ascii=False, default=str) + "\n")
            else:
                output.print_json(result.to_json())
            return
        if remote is not None:
            style = "green" if result.webhook_status == 200 else "bold red"
            output.info(f"POST {remote} → HTTP {result.webhook_status}", style=style)
        if result.webhook_status != 200:
            hint = _refusal_hint(result, remote) if remote is not None else None
            output.error(result.note or f"HTTP {result.webhook_status}", hint=hint)
            return
        if not (self.lines and sys.stdin.isatty()):  # a terminal already shows what was typed
            output.info(f"{result.user_name or result.user_id}: {_describe(result.sent)}", style="bold")
        for turn in result.earlier_turns + ((result.turn,) if result.turn else ()):
            if turn is not result.turn:
                output.info(f"(an earlier message was answered first: {turn.user_text!r})", style="dim")
            for reply in turn.replies:
                self._reply(reply)
            if turn.error:
                output.info(f"error: {turn.error}", style="yellow")
            output.info(f"stage: {_stage_path(turn)}", style="dim")
            for line in _state_lines(turn):
                output.info(line, style="dim")
        for note in _notes(result):
            output.info(note, style="yellow")

    def _reply(self, reply: SimulatedReply) -> None:
        from chatops.channels.whatsapp import MAX_REPLY_BUTTONS

        message = reply.message
        if message.kind == "template":
            params = ", ".join(message.template_params)
            lines = [
                f"[template {message.template_name} ({message.template_language}){': ' + params if params else ''}]"
            ]
        else:
            lines = message.text.splitlines() or [""]
        buttons = message.buttons
        if buttons and self.channel == "whatsapp" and len(buttons) > MAX_REPLY_BUTTONS:  # shown as a list
            lines.append(f"[{message.list_button or 'Choose'}]")
            lines.extend(f"  • {b.title}{' — ' + b.description if b.description else ''}" for b in buttons)
        elif buttons:
            lines.append(" ".join(f"[{b.title}]" for b in buttons))
        output.info(f"{self.bot_name}: {lines[0]}")
        for rest in lines[1:]:
            output.info(f"  {rest}" if rest else "")
        if buttons:
            output.info(f"  (--button {' | '.join(b.id for b in buttons)})", style="dim")
        if reply.status == "failed":
            output.info(f"  (not sent: {reply.error})", style="yellow")


def _refusal_hint(result: SimulationResult, server: str) -> str:
    """What to do when the server at ``server`` answered the webhook with something else than 200."""
    secret = f"CHATOPS_{result.channel.upper()}_APP_SECRET"
    status = result.webhook_status
    if status in (401, 403):
        return f"the server checks signatures with its own app secret: set {secret} here to the server's value"
    if status == 404:
        return f"the server has no {result.channel} credentials (that webhook is off there), or {server} is not chatops"
    if status == 413:
        return "the webhook is larger than the server's CHATOPS_MAX_BODY_BYTES"
    if status == 503:
        return "the server cannot use its database right now: see its log and /readyz"
    return "see the server's log"


def _describe(sent: UserInput) -> str:
    if sent.button is not None:
        return f"[button {sent.button}]"
    if sent.location is not None:
        return f"[location {sent.location[0]:g}, {sent.location[1]:g}]"
    return sent.text or ""


def _notes(result: SimulationResult) -> list[str]:
    notes = [result.note] if result.note else []
    if not result.transcript or result.turn is not None:
        return notes
    if result.message_status == "skipped":
        notes.append(
            f"(not answered: the message was skipped{': ' + result.message_error if result.message_error else ''})"
        )
    elif result.message_status == "pending" and result.mode == "human":
        notes.append("(no reply: the conversation was handed to a person; --fresh starts it again)")
    elif result.message_status == "pending" and result.message_error:
        notes.append(f"(not answered yet: the turn failed and will be retried: {result.message_error})")
    elif result.message_status == "pending":
        notes.append("(not answered yet)")
    return notes


def _state_lines(turn: SimulatedTurn) -> list[str]:
    """``state: name=value, …`` after the turn and what it changed; nothing for a turn of a bot that keeps none."""
    changes = turn.state_changes
    if not turn.state_after and not changes:
        return []
    values = ", ".join(f"{name}={_value(turn.state_after[name])}" for name in sorted(turn.state_after))
    lines = [f"state: {values or '(empty)'}"]
    if changes:
        parts = [(label, names) for label, names in changes.to_json().items() if names]
        lines.append("  " + "; ".join(f"{label} {', '.join(names)}" for label, names in parts))
    return lines


def _value(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= _VALUE_WIDTH else text[: _VALUE_WIDTH - 1] + "…"


def _stage_path(turn: SimulatedTurn) -> str:
    """``before → after``, with the stage that answered in between when it is neither (a stage with ``next:``)."""
    before, after = turn.stage_before or NEW_STAGE, turn.stage_after or NEW_STAGE
    answered = turn.stage_answered
    if answered is None or answered in (turn.stage_before, turn.stage_after):
        return f"{before} → {after}"
    return f"{before} → {answered} → {after}"
