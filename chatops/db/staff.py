"""Staff accounts of the operator console and their server-side sessions.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommended profile); a hash made
with older parameters is rehashed at the next successful login. A session is a random token kept in the staff
member's signed cookie; only its SHA-256 is stored (the token has 256 bits of entropy, so a fast hash suffices).
A session ends when it is idle longer than the idle timeout, when it is revoked (logout, "log out everywhere", an
admin disabling the account or changing its role), or when the account is disabled.

Raises :class:`StaffError` (a ChatopsError with a hint) for a bad email, role or password, a taken email, or an
unknown account.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from chatops.db.api_keys import ROLES, Role
from chatops.db.tables import console_secrets, staff_accounts, staff_sessions
from chatops.errors import ChatopsError

MIN_PASSWORD = 10
TOUCH_INTERVAL = timedelta(seconds=30)  # last_seen_at is written at most this often per session
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_hasher = PasswordHasher()
# Verified against when the email is unknown, so a login takes as long whether or not the account exists.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


class StaffError(ChatopsError):
    """A staff account operation that cannot be done."""


class StaffNotFoundError(StaffError):
    """No staff account has that email or id."""


@dataclass(frozen=True)
class StaffAccount:
    id: int
    email: str
    role: Role
    disabled: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True)
class StaffSession:
    """A live session and the account it belongs to."""

    id: int
    account: StaffAccount
    created_at: datetime
    last_seen_at: datetime


def _account(row: Any) -> StaffAccount:
    m = row._mapping
    return StaffAccount(
        id=m["id"],
        email=m["email"],
        role=m["role"],
        disabled=bool(m["disabled"]),
        created_at=m["created_at"],
        last_login_at=m["last_login_at"],
    )


_ACCOUNT = [c for c in staff_accounts.c if c.name != "password_hash"]


def normalise_email(email: str) -> str:
    """The email as stored: trimmed and lower-case. Raises StaffError when it is not an address."""
    value = email.strip().lower()
    if not _EMAIL.match(value) or len(value) > 254:
        raise StaffError(f"{email!r} is not an email address", hint="e.g. ana@shop.example")
    return value


def _check_role(role: str) -> Role:
    # ROLES narrows nothing for mypy; the membership test is the check.
    if role not in ROLES:
        raise StaffError(f"unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise StaffError(f"the password is too short (at least {MIN_PASSWORD} characters)")


def create_account(db: sa.Engine, *, email: str, password: str, role: str, now: datetime) -> StaffAccount:
    """Store a new account. Raises StaffError (bad email/role/password, email taken)."""
    address = normalise_email(email)
    checked = _check_role(role)
    _check_password(password)
    with db.begin() as connection:
        if connection.execute(sa.select(staff_accounts.c.id).where(staff_accounts.c.email == address)).first():
            raise StaffError(f"a staff account {address!r} exists", hint="`chatops users set-password` changes it")
        connection.execute(
            sa.insert(staff_accounts).values(
                email=address, password_hash=_hasher.hash(password), role=checked, disabled=False, created_at=now
            )
        )
    return get_account(db, address)


def list_accounts(db: sa.Engine) -> list[StaffAccount]:
    """Every account, oldest first."""
    with db.connect() as connection:
        return [_account(row) for row in connection.execute(sa.select(*_ACCOUNT).order_by(staff_accounts.c.id))]


def get_account(db: sa.Engine, email: str) -> StaffAccount:
    """Raises StaffNotFoundError."""
    address = email.strip().lower()
    with db.connect() as connection:
        row = connection.execute(sa.select(*_ACCOUNT).where(staff_accounts.c.email == address)).first()
    if row is None:
        raise StaffNotFoundError(f"no staff account {address!r}", hint="`chatops users list` shows them")
    return _account(row)


def update_account(
    db: sa.Engine,
    email: str,
    *,
    now: datetime,
    role: str | None = None,
    disabled: bool | None = None,
    password: str | None = None,
) -> StaffAccount:
    """Change an account's role, disabled flag or password; every change ends its open sessions.

    Raises StaffNotFoundError, StaffError.
    """
    account = get_account(db, email)
    values: dict[str, Any] = {}
    if role is not None:
        values["role"] = _check_role(role)
    if disabled is not None:
        values["disabled"] = disabled
    if password is not None:
        _check_password(password)
        values["password_hash"] = _hasher.hash(password)
    if values:
        with db.begin() as connection:
            connection.execute(sa.update(staff_accounts).where(staff_accounts.c.id == account.id).values(**values))
            _revoke_all(connection, account.id, now)
    return get_account(db, account.email)


def authenticate(db: sa.Engine, email: str, password: str, *, now: datetime) -> StaffAccount | None:
    """The enabled account with this email and password, else None (same work either way). Records the login."""
    address = email.strip().lower()
    with db.connect() as connection:
        row = connection.execute(
            sa.select(*_ACCOUNT, staff_accounts.c.password_hash).where(staff_accounts.c.email == address)
        ).first()
    stored = row.password_hash if row is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row.disabled:
        return None
    values: dict[str, Any] = {"last_login_at": now}
    if _hasher.check_needs_rehash(stored):
        values["password_hash"] = _hasher.hash(password)
    with db.begin() as connection:
        connection.execute(sa.update(staff_accounts).where(staff_accounts.c.id == row.id).values(**values))
    return _account(row)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(db: sa.Engine, account: StaffAccount, *, now: datetime, client_address: str | None) -> str:
    """Open a session for ``account``; returns its token (goes in the signed cookie, never stored)."""
    token = secrets.token_urlsafe(32)
    with db.begin() as connection:
        connection.execute(
            sa.insert(staff_sessions).values(
                staff_id=account.id,
                token_hash=_digest(token),
                created_at=now,
                last_seen_at=now,
                client_address=client_address,
            )
        )
    return token


def find_session(db: sa.Engine, token: str, *, now: datetime, idle_timeout: timedelta) -> StaffSession | None:
    """The live session for ``token`` (its last_seen_at moved to now); None when unknown, revoked, idle too long
    or its account is disabled. An idle session is revoked on the way, so it cannot come back."""
    s, a = staff_sessions.c, staff_accounts.c
    with db.connect() as connection:
        row = connection.execute(
            sa.select(
                s.id.label("session_id"),
                s.created_at.label("session_created_at"),
                s.last_seen_at,
                s.revoked_at,
                *_ACCOUNT,
            )
            .join_from(staff_sessions, staff_accounts, s.staff_id == a.id)
            .where(s.token_hash == _digest(token))
        ).first()
    if row is None or row.revoked_at is not None or row.disabled:
        return None
    if now - row.last_seen_at > idle_timeout:
        end_session(db, token, now=now)
        return None
    if now - row.last_seen_at >= TOUCH_INTERVAL:
        with db.begin() as connection:
            connection.execute(sa.update(staff_sessions).where(s.id == row.session_id).values(last_seen_at=now))
    return StaffSession(
        id=row.session_id, account=_account(row), created_at=row.session_created_at, last_seen_at=row.last_seen_at
    )


def end_session(db: sa.Engine, token: str, *, now: datetime) -> None:
    """Revoke one session (logout)."""
    s = staff_sessions.c
    with db.begin() as connection:
        connection.execute(
            sa.update(staff_sessions)
            .where(s.token_hash == _digest(token), s.revoked_at.is_(None))
            .values(revoked_at=now)
        )


def _revoke_all(connection: sa.Connection, staff_id: int, now: datetime) -> int:
    s = staff_sessions.c
    result = connection.execute(
        sa.update(staff_sessions).where(s.staff_id == staff_id, s.revoked_at.is_(None)).values(revoked_at=now)
    )
    return int(result.rowcount)


def end_all_sessions(db: sa.Engine, email: str, *, now: datetime) -> int:
    """Revoke every open session of the account ("log out everywhere"); returns how many. Raises StaffNotFoundError."""
    account = get_account(db, email)
    with db.begin() as connection:
        return _revoke_all(connection, account.id, now)


def console_secret(db: sa.Engine) -> str:
    """The key that signs console cookies: made once, stored, shared by every process of the deployment."""
    query = sa.select(console_secrets.c.value).where(console_secrets.c.name == "cookie")
    with db.connect() as connection:
        value = connection.execute(query).scalar()
    if value is not None:
        return str(value)
    try:
        with db.begin() as connection:
            connection.execute(sa.insert(console_secrets).values(name="cookie", value=secrets.token_urlsafe(48)))
    except sa.exc.IntegrityError:
        pass  # another process made it first: use theirs
    with db.connect() as connection:
        return str(connection.execute(query).scalar_one())
