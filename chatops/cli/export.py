"""``chatops export``: write stored conversations as a replay corpus (JSON Lines), optionally redacted.

The selection options are shared with ``chatops replay`` (they are declared here once).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from chatops.cli import output

if TYPE_CHECKING:
    from chatops.replay.corpus import Selection

Since = Annotated[
    str | None, typer.Option("--since", help="Only turns started at or after this time (ISO 8601; UTC if no offset).")
]
Until = Annotated[str | None, typer.Option("--until", help="Only turns started before this time (ISO 8601).")]
ConversationIds = Annotated[
    list[int] | None, typer.Option("--conversation", help="Only this conversation id (repeatable).")
]
StageFilter = Annotated[str | None, typer.Option("--stage", help="Only conversations with a turn in this stage.")]
ChannelFilter = Annotated[str | None, typer.Option("--channel", help="Only whatsapp or messenger conversations.")]
Limit = Annotated[int | None, typer.Option("--limit", min=0, help="Only the newest N conversations.")]
Sample = Annotated[int | None, typer.Option("--sample", min=0, help="A random sample of N conversations.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of --sample (the same seed draws the same sample).")]


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time for ``option`` (naive means UTC). Raises typer.BadParameter when malformed."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2026-11-24T10:00)", param_hint=option
        ) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def selection_from(
    since: str | None,
    until: str | None,
    conversation: list[int] | None,
    stage: str | None,
    channel: str | None,
    limit: int | None,
    sample: int | None,
    seed: int,
) -> Selection:
    """The :class:`chatops.replay.corpus.Selection` of the shared options."""
    from chatops.replay.corpus import Selection

    return Selection(
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
        conversation_ids=tuple(conversation or ()),
        stage=stage,
        channel=channel,
        limit=limit,
        sample=sample,
        seed=seed,
    )


def export_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", "-o", help="The corpus file to write ('-' for stdout).")],
    redact: Annotated[
        bool, typer.Option("--redact", help="Replace phone numbers, names, e-mails and ids with stable pseudonyms.")
    ] = False,
    since: Since = None,
    until: Until = None,
    conversation: ConversationIds = None,
    stage: StageFilter = None,
    channel: ChannelFilter = None,
    limit: Limit = None,
    sample: Sample = None,
    seed: Seed = 0,
) -> None:
    """Write stored conversations and their turns as a replay corpus (JSON Lines, one conversation per line).

    Reads the database only. The format is documented and versioned in docs/replay.md.

    Example: chatops export --out corpus.jsonl --redact --since 2026-11-01 --sample 200 --seed 7
    """
    from chatops.cli.app import settings_from
    from chatops.db.connect import create_db_engine
    from chatops.replay.export import export_corpus

    settings = settings_from(ctx, uses=("database_url", "log_level"))
    selection = selection_from(since, until, conversation, stage, channel, limit, sample, seed)
    engine = create_db_engine(settings.database_url)
    try:
        if str(out) == "-":
            count = export_corpus(engine, output.stdout.file, selection, redact=redact)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            with out.open("w", encoding="utf-8") as handle:
                count = export_corpus(engine, handle, selection, redact=redact)
    finally:
        engine.dispose()
    if str(out) != "-":
        output.stderr.print(f"Exported {count} conversations to {out}" + (" (redacted)" if redact else ""))
