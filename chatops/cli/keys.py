"""``chatops keys``: create, list, revoke and rotate admin API keys (chatops.db.api_keys)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatops.cli import output
from chatops.cli.choices import ROLES, choice_metavar, choice_parser

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.db.api_keys import ApiKey, NewKey

keys_app = typer.Typer(
    name="keys",
    help="Admin API keys: create, list, revoke, rotate.\n\n"
    "Example: chatops keys create --name ops-bot --role operator --expires 90d",
    no_args_is_help=True,
)


def _expires(value: str | None) -> timedelta | None:
    if value is None:
        return None
    from chatops.config.schedule import parse_duration
    from chatops.errors import ChatopsError

    try:
        return parse_duration(value)
    except ChatopsError as exc:
        raise typer.BadParameter(exc.message, param_hint="--expires") from None


def _now() -> datetime:
    return datetime.now(UTC)


def _print_new(new: NewKey, *, as_json: bool, verb: str) -> None:
    if as_json:
        output.print_json({**_key_json(new.key), "secret": new.secret})
        return
    output.info(f"{verb} API key {new.key.name!r} ({new.key.role}); it is shown only this once:")
    output.info(new.secret, style="bold")
    if new.key.expires_at:
        output.info(f"expires {new.key.expires_at.isoformat(timespec='seconds')}")


def _key_json(key: ApiKey) -> dict[str, Any]:
    return {
        "name": key.name,
        "prefix": key.prefix,
        "role": key.role,
        "status": key.status(_now()),
        "created_at": key.created_at,
        "last_used_at": key.last_used_at,
        "expires_at": key.expires_at,
        "revoked_at": key.revoked_at,
    }


def _audit(engine: sa.Engine, action: str, target: str, **details: object) -> None:
    import getpass

    from chatops.db import audit

    audit.record(
        engine,
        actor=f"cli:{getpass.getuser()}",
        action=action,
        target=target,
        outcome="ok",
        now=_now(),
        details=details or None,
    )


@keys_app.command("create")
def create_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Option("--name", help="A unique name: who or what uses the key.")],
    role: Annotated[
        str, typer.Option("--role", parser=choice_parser(ROLES), metavar=choice_metavar(ROLES), help="What it may do.")
    ],
    expires: Annotated[
        str | None, typer.Option("--expires", help="Lifetime, e.g. 90d or 12h (default: never).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Create an API key and print it once (only its hash and prefix are stored).

    Example: chatops keys create --name ops-bot --role operator --expires 90d
    """
    from chatops.cli.app import database_engine
    from chatops.db.api_keys import create_key

    lifetime = _expires(expires)
    engine = database_engine(ctx)
    new = create_key(engine, name=name, role=role, now=_now(), expires_in=lifetime)  # type: ignore[arg-type]
    _audit(engine, "keys.create", name, role=role)
    _print_new(new, as_json=as_json, verb="Created")


@keys_app.command("list")
def list_command(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """List API keys: name, prefix, role, status, last use (never the key).

    Example: chatops keys list --json
    """
    from chatops.cli.app import database_engine
    from chatops.db.api_keys import list_keys

    keys = list_keys(database_engine(ctx))
    if as_json:
        output.print_json([_key_json(key) for key in keys])
        return
    if not keys:
        output.info("no API keys; create one with `chatops keys create --name NAME --role viewer`")
    for key in keys:
        data = _key_json(key)
        used = key.last_used_at.isoformat(timespec="seconds") if key.last_used_at else "never"
        expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
        output.info(
            f"{key.name:<24} {key.prefix}  {key.role:<8} {data['status']:<8} last used {used}  expires {expires}"
        )


@keys_app.command("revoke")
def revoke_command(ctx: typer.Context, name: Annotated[str, typer.Argument(help="The key's name.")]) -> None:
    """Revoke an API key: it is refused (401) from now on.

    Example: chatops keys revoke ops-bot
    """
    from chatops.cli.app import database_engine
    from chatops.db.api_keys import revoke_key

    engine = database_engine(ctx)
    revoke_key(engine, name, now=_now())
    _audit(engine, "keys.revoke", name)
    output.info(f"Revoked API key {name!r}.")


@keys_app.command("rotate")
def rotate_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The key's name.")],
    expires: Annotated[
        str | None, typer.Option("--expires", help="New lifetime from now (default: unchanged).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Give an API key a new secret and print it once; the old secret stops working at once.

    Example: chatops keys rotate ops-bot --expires 90d
    """
    from chatops.cli.app import database_engine
    from chatops.db.api_keys import rotate_key

    lifetime = _expires(expires)
    engine = database_engine(ctx)
    new = rotate_key(engine, name, now=_now(), expires_in=lifetime)
    _audit(engine, "keys.rotate", name)
    _print_new(new, as_json=as_json, verb="Rotated")
