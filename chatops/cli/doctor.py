"""``chatops doctor``: check a deployment, one line per check, exit 1 when one fails."""

from __future__ import annotations

from typing import Annotated

import typer

from chatops.cli import output

_STYLES = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}


def doctor_command(
    ctx: typer.Context,
    offline: Annotated[bool, typer.Option("--offline", help="Skip the checks that go over the network.")] = False,
    url: Annotated[
        str | None,
        typer.Option("--url", help="A running server's public base URL: try its verify-token handshake."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check settings, database, channels, OpenAI, templates, workers and queues: pass, warn or fail, with hints.

    Exit 1 when a check fails (warnings do not). Reads only; sends no message.

    Example: chatops doctor --url https://bot.example.com
    """
    from datetime import UTC, datetime

    from chatops.cli.app import settings_from
    from chatops.doctor import Check, failed, run_doctor
    from chatops.errors import ConfigError

    try:
        settings = settings_from(ctx)
    except ConfigError as exc:
        checks = [Check("settings", "fail", exc.message, exc.hint)]
    else:
        checks = []
        for check in run_doctor(settings, offline=offline, url=url, now=lambda: datetime.now(UTC)):
            checks.append(check)
            if not as_json:
                _print(check)
    if as_json:
        output.print_json({"ok": not failed(checks), "checks": [check.to_json() for check in checks]})
    elif len(checks) == 1 and checks[0].status == "fail":
        _print(checks[0])
    if not as_json:
        counts = {status: sum(c.status == status for c in checks) for status in ("pass", "warn", "fail", "skip")}
        output.info(", ".join(f"{n} {status}" for status, n in counts.items() if n))
    if failed(checks):
        raise typer.Exit(1)


def _print(check: object) -> None:
    from rich.text import Text

    from chatops.doctor import Check

    assert isinstance(check, Check)
    output.stdout.print(
        Text.assemble((f"{check.status.upper():<5}", _STYLES[check.status]), f" {check.name:<18} {check.detail}")
    )
    if check.hint and check.status != "pass":
        output.stdout.print(Text(f"      {'':<18} hint: {check.hint}", style="dim"))
