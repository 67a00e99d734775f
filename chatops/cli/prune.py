"""``chatops prune``: apply the retention settings — clear raw payloads and turn traces, delete old messages."""

from __future__ import annotations

from typing import Annotated

import typer

from chatops.cli import output

# Literals, not chatops.db.retention's constants: importing it here would load SQLAlchemy for every `chatops --help`.
DEFAULT_BATCH_SIZE = 200
DEFAULT_PAUSE_RATIO = 1.0

_LABELS = {
    "raw_cleared": "raw payloads cleared",
    "traces_cleared": "turn traces cleared",
    "outbound_deleted": "outbound messages deleted",
    "inbound_deleted": "inbound messages deleted",
    "turns_deleted": "turns deleted",
    "conversations_deleted": "idle conversations deleted",
}


def prune_command(
    ctx: typer.Context,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would go; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Rows per transaction (small: no long locks).")
    ] = DEFAULT_BATCH_SIZE,
    pause_ratio: Annotated[
        float,
        typer.Option(
            "--pause-ratio",
            min=0.0,
            help="After each batch, wait this many times as long as it took (0: no pause).",
        ),
    ] = DEFAULT_PAUSE_RATIO,
) -> None:
    """Delete or clear data older than the CHATOPS_RETAIN_*_DAYS settings, in small batches.

    Raw webhook payloads after CHATOPS_RETAIN_RAW_DAYS (30), turn traces (prompts, variables, AI responses) after
    CHATOPS_RETAIN_TRACES_DAYS (90), messages and turns after CHATOPS_RETAIN_MESSAGES_DAYS (unset: kept). Queued
    work is never touched. Run it daily from a systemd timer or cron (docs/scaling.md).

    Example: chatops prune --dry-run   (what a run would remove, per kind of data)
    """
    from chatops.cli.app import database_engine, settings_from

    settings = settings_from(
        ctx, uses=("database_url", "log_level", "retain_raw_days", "retain_traces_days", "retain_messages_days")
    )
    from datetime import UTC, datetime

    from chatops.db.retention import RetentionPolicy, prune

    policy = RetentionPolicy(
        raw_days=settings.retain_raw_days,
        traces_days=settings.retain_traces_days,
        messages_days=settings.retain_messages_days,
    )
    engine = database_engine(ctx, settings=settings)
    try:
        report = prune(
            engine, policy, now=datetime.now(UTC), batch_size=batch_size, pause_ratio=pause_ratio, dry_run=dry_run
        )
    finally:
        engine.dispose()
    if as_json:
        output.print_json(
            {
                "dry_run": dry_run,
                "retention_days": {
                    "raw": policy.raw_days,
                    "traces": policy.traces_days,
                    "messages": policy.messages_days,
                },
                "counts": report.counts,
            }
        )
        return
    verb = "would be" if dry_run else "were"
    for name, label in _LABELS.items():
        if name in report.counts:
            output.info(f"{report.counts[name]:>9,}  {label}")
    if not report.counts:
        output.info("Nothing to do: every CHATOPS_RETAIN_*_DAYS is set to never.")
    elif dry_run:
        output.info(f"Dry run: these rows {verb} changed by `chatops prune`; nothing was changed.")
