"""Checks that read files and settings only: settings warnings, the bot and its templates, channel credentials."""

from __future__ import annotations

from collections.abc import Iterator

from chatops.config.settings import Settings, channel_credentials, configuration_warnings
from chatops.doctor import Check
from chatops.errors import ChatopsError

CHANNELS = ("whatsapp", "messenger")


def settings_check() -> Check:
    """The settings loaded (the caller got them); warn about ``CHATOPS_*`` names that are no setting."""
    try:
        warnings = configuration_warnings()
    except ChatopsError as exc:
        return Check("settings", "fail", exc.message, exc.hint)
    if warnings:
        more = f" (and {len(warnings) - 1} more)" if len(warnings) > 1 else ""
        return Check("settings", "warn", warnings[0] + more, "fix or remove those names: docs/configuration.md")
    return Check("settings", "pass", "valid")


def bot_checks(settings: Settings) -> Iterator[Check]:
    """``chatops lint-templates`` over the bot: errors fail, warnings warn."""
    from chatops.templating.lint import lint_bot

    try:
        report = lint_bot(settings.stages, templates_dir=settings.templates_dir)
    except ChatopsError as exc:
        yield Check("templates", "fail", exc.message, exc.hint)
        return
    command = f"chatops lint-templates {settings.stages}"
    if report.errors:
        first = next(finding for finding in report.findings if finding.severity == "error")
        yield Check("templates", "fail", f"{report.errors} error(s), first: {first.text}", f"run `{command}`")
    elif report.warnings:
        yield Check("templates", "warn", f"{report.warnings} warning(s)", f"run `{command}`")
    else:
        yield Check("templates", "pass", f"{settings.stages} and its templates lint clean")


def channel_checks(settings: Settings) -> Iterator[Check]:
    """Each channel: off (nothing set), or all three of app secret, verify token and send token present."""
    enabled = 0
    for channel in CHANNELS:
        credentials = channel_credentials(settings, channel)
        if not credentials.enabled:
            continue
        enabled += 1
        values = (credentials.app_secret, credentials.verify_token, credentials.send_token)
        missing = [name for name, value in zip(credentials.variables, values, strict=True) if not value]
        if missing:
            yield Check(
                channel,
                "fail",
                f"missing {', '.join(missing)}",
                "set them in the environment file (docs/deployment.md, the Meta side)",
            )
        else:
            yield Check(channel, "pass", "app secret, verify token and send token set")
    if not enabled:
        yield Check(
            "channels",
            "warn",
            "no channel is configured: webhooks are refused",
            "set CHATOPS_WHATSAPP_* or CHATOPS_MESSENGER_* (docs/configuration.md)",
        )
