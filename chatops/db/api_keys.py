"""API keys: create, list, revoke, rotate, and look one up for a request.

A key reads ``chatops_<prefix>_<secret>`` (prefix: 8 hex digits; secret: 43 URL-safe characters). Only the
prefix (for lookup, unique, shown in listings) and the SHA-256 of the whole key are stored; the key itself is
printed once, when it is created or rotated. The secret has 256 bits of entropy, so a fast hash is enough (a slow
password hash protects guessable passwords, not random keys) and a request costs no key-derivation time. Hashes
are compared with :func:`hmac.compare_digest`.

``last_used_at`` is written at most once per :data:`TOUCH_INTERVAL` per key, by :func:`touch_key`, so a busy key
costs no write per request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa

from chatops.db.tables import api_keys
from chatops.errors import ChatopsError

Role = Literal["viewer", "operator", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "admin")
KEY_PREFIX = "chatops_"
TOUCH_INTERVAL = timedelta(minutes=1)


class KeyNotFoundError(ChatopsError):
    """No API key has that name."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key, without its secret."""

    id: int
    name: str
    prefix: str
    role: Role
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    def status(self, now: datetime) -> Literal["active", "expired", "revoked"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class NewKey:
    """A key just created or rotated: ``secret`` is the whole key, shown once."""

    key: ApiKey
    secret: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _new_secret() -> tuple[str, str]:
    prefix = secrets.token_hex(4)
    return prefix, f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"


def _key(row: Any) -> ApiKey:
    m = row._mapping
    return ApiKey(
        id=m["id"],
        name=m["name"],
        prefix=m["prefix"],
        role=m["role"],
        created_at=m["created_at"],
        last_used_at=m["last_used_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
    )


_COLUMNS = [c for c in api_keys.c if c.name != "hash"]


def create_key(db: sa.Engine, *, name: str, role: Role, now: datetime, expires_in: timedelta | None = None) -> NewKey:
    """Store a new key named ``name`` and return it with its secret.

    Raises ChatopsError when a key of that name exists (revoked keys keep their name: the audit log refers to it).
    """
    if role not in ROLES:
        raise ChatopsError(f"unknown role {role!r}", hint=f"one of {', '.join(ROLES)}")
    prefix, secret = _new_secret()
    values = {
        "name": name,
        "prefix": prefix,
        "hash": _digest(secret),
        "role": role,
        "created_at": now,
        "expires_at": now + expires_in if expires_in else None,
    }
    with db.begin() as connection:
        taken = connection.execute(sa.select(api_keys.c.id).where(api_keys.c.name == name)).first()
        if taken is not None:
            raise ChatopsError(
                f"an API key named {name!r} exists", hint="choose another name, or `chatops keys rotate`"
            )
        connection.execute(sa.insert(api_keys).values(**values))
        row = connection.execute(sa.select(*_COLUMNS).where(api_keys.c.prefix == prefix)).one()
    return NewKey(_key(row), secret)


def list_keys(db: sa.Engine) -> list[ApiKey]:
    """Every key, oldest first (revoked and expired ones too)."""
    with db.connect() as connection:
        return [_key(row) for row in connection.execute(sa.select(*_COLUMNS).order_by(api_keys.c.id))]


def get_key(db: sa.Engine, name: str) -> ApiKey:
    """The key named ``name``. Raises KeyNotFoundError."""
    with db.connect() as connection:
        row = connection.execute(sa.select(*_COLUMNS).where(api_keys.c.name == name)).first()
    if row is None:
        raise KeyNotFoundError(f"no API key named {name!r}", hint="`chatops keys list` shows them")
    return _key(row)


def revoke_key(db: sa.Engine, name: str, *, now: datetime) -> ApiKey:
    """Revoke the key named ``name`` (from now on it gets 401). Revoking twice keeps the first time."""
    key = get_key(db, name)
    if key.revoked_at is None:
        with db.begin() as connection:
            connection.execute(sa.update(api_keys).where(api_keys.c.id == key.id).values(revoked_at=now))
    return get_key(db, name)


def rotate_key(db: sa.Engine, name: str, *, now: datetime, expires_in: timedelta | None = None) -> NewKey:
    """Give the key named ``name`` a new secret (the old one stops working at once); same name and role.

    ``expires_in`` counts from now; without it the key keeps its remaining lifetime. Raises KeyNotFoundError,
    ChatopsError for a revoked key.
    """
    key = get_key(db, name)
    if key.revoked_at is not None:
        raise ChatopsError(f"the API key {name!r} is revoked", hint="create a new key instead")
    prefix, secret = _new_secret()
    expires_at = now + expires_in if expires_in else key.expires_at
    with db.begin() as connection:
        connection.execute(
            sa.update(api_keys)
            .where(api_keys.c.id == key.id)
            .values(prefix=prefix, hash=_digest(secret), expires_at=expires_at, last_used_at=None)
        )
    return NewKey(get_key(db, name), secret)


def find_key(db: sa.Engine, secret: str, *, now: datetime) -> ApiKey | None:
    """The active key whose secret is ``secret``; None when it is malformed, unknown, revoked or expired."""
    prefix, separator = secret[len(KEY_PREFIX) : len(KEY_PREFIX) + 8], secret[len(KEY_PREFIX) + 8 : len(KEY_PREFIX) + 9]
    if not secret.startswith(KEY_PREFIX) or separator != "_" or len(secret) > 128:
        return None
    with db.connect() as connection:
        row = connection.execute(sa.select(*_COLUMNS, api_keys.c.hash).where(api_keys.c.prefix == prefix)).first()
    if row is None or not hmac.compare_digest(row.hash, _digest(secret)):
        return None
    key = _key(row)
    return key if key.status(now) == "active" else None


def touch_key(db: sa.Engine, key: ApiKey, *, now: datetime) -> bool:
    """Set ``last_used_at = now`` unless it was set less than TOUCH_INTERVAL ago; True when it wrote.

    The condition is in the UPDATE, so several processes racing write once between them.
    """
    if key.last_used_at is not None and now - key.last_used_at < TOUCH_INTERVAL:
        return False
    with db.begin() as connection:
        result = connection.execute(
            sa.update(api_keys)
            .where(
                api_keys.c.id == key.id,
                sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at <= now - TOUCH_INTERVAL),
            )
            .values(last_used_at=now)
        )
    return bool(result.rowcount)
