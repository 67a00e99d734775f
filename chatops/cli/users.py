"""``chatops users``: staff accounts of the operator console (chatops.db.staff): create, list, change, log out."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatops.cli import output
from chatops.cli.choices import ROLES, choice_metavar, choice_parser

if TYPE_CHECKING:
    import sqlalchemy as sa

    from chatops.db.staff import StaffAccount

users_app = typer.Typer(
    name="users",
    help="Staff accounts of the operator console (/console): create, list, change, log out.\n\n"
    "Example: chatops users create --email ana@shop.example --role operator",
    no_args_is_help=True,
)


def _now() -> datetime:
    return datetime.now(UTC)


def _read_password(from_stdin: bool) -> str:
    """The new password: one line of stdin with --password-stdin, else asked twice on the terminal (not echoed)."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    import getpass

    first = getpass.getpass("Password: ", stream=sys.stderr)
    if getpass.getpass("Repeat it: ", stream=sys.stderr) != first:
        output.error("the two passwords differ")
        raise typer.Exit(1)
    return first


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


def _json(account: StaffAccount) -> dict[str, Any]:
    return {
        "email": account.email,
        "role": account.role,
        "disabled": account.disabled,
        "created_at": account.created_at,
        "last_login_at": account.last_login_at,
    }


PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from one line of standard input.")
]


@users_app.command("create")
def create_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Option("--email", help="The staff member's email: their login name.")],
    role: Annotated[
        str,
        typer.Option("--role", parser=choice_parser(ROLES), metavar=choice_metavar(ROLES), help="What they may do."),
    ],
    password_stdin: PasswordStdin = False,
) -> None:
    """Create a staff account (the password is asked for, or read with --password-stdin; stored as argon2id).

    Example: chatops users create --email ana@shop.example --role operator
    """
    from chatops.cli.app import database_engine
    from chatops.db.staff import create_account

    password = _read_password(password_stdin)
    engine = database_engine(ctx)
    account = create_account(engine, email=email, password=password, role=role, now=_now())
    _audit(engine, "users.create", account.email, role=role)
    output.info(f"Created staff account {account.email} ({account.role}); they log in at /console/login.")


@users_app.command("list")
def list_command(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False
) -> None:
    """List staff accounts: email, role, disabled, last login.

    Example: chatops users list --json
    """
    from chatops.cli.app import database_engine
    from chatops.db.staff import list_accounts

    accounts = list_accounts(database_engine(ctx))
    if as_json:
        output.print_json([_json(account) for account in accounts])
        return
    if not accounts:
        output.info("no staff accounts; create one with `chatops users create --email … --role admin`")
    for account in accounts:
        login = account.last_login_at.isoformat(timespec="seconds") if account.last_login_at else "never"
        state = "disabled" if account.disabled else "active"
        output.info(f"{account.email:<32} {account.role:<8} {state:<8} last login {login}")


@users_app.command("set")
def set_command(
    ctx: typer.Context,
    email: Annotated[str, typer.Argument(help="The account's email.")],
    role: Annotated[
        str | None,
        typer.Option("--role", parser=choice_parser(ROLES), metavar=choice_metavar(ROLES), help="A new role."),
    ] = None,
    disable: Annotated[
        bool | None, typer.Option("--disable/--enable", help="Refuse or allow the account's logins.")
    ] = None,
    password: Annotated[bool, typer.Option("--password", help="Set a new password (asked for).")] = False,
    password_stdin: PasswordStdin = False,
) -> None:
    """Change an account's role, disabled flag or password; its open sessions end.

    Example: chatops users set ana@shop.example --role admin
    """
    from chatops.cli.app import database_engine
    from chatops.db.staff import update_account

    new_password = _read_password(password_stdin) if password or password_stdin else None
    engine = database_engine(ctx)
    account = update_account(engine, email, now=_now(), role=role, disabled=disable, password=new_password)
    changed = {"role": role, "disabled": disable, "password": True if new_password else None}
    _audit(engine, "users.set", account.email, **{k: v for k, v in changed.items() if v is not None})
    state = "disabled" if account.disabled else "active"
    output.info(f"{account.email}: {account.role}, {state}; their sessions were ended.")


@users_app.command("logout")
def logout_command(ctx: typer.Context, email: Annotated[str, typer.Argument(help="The account's email.")]) -> None:
    """End every open console session of an account (they must log in again).

    Example: chatops users logout ana@shop.example
    """
    from chatops.cli.app import database_engine
    from chatops.db.staff import end_all_sessions

    engine = database_engine(ctx)
    count = end_all_sessions(engine, email, now=_now())
    _audit(engine, "users.logout", email.strip().lower(), sessions=count)
    output.info(f"Ended {count} session(s) of {email.strip().lower()}.")
