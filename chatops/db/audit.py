"""The audit log: every mutating admin action (API or CLI), who did it, on what, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from chatops.db.tables import audit_log

Outcome = Literal["ok", "denied", "rejected", "failed"]


@dataclass(frozen=True)
class AuditEntry:
    """One audit row. ``actor`` is the API key name (``cli:<user>`` for the CLI)."""

    id: int
    at: datetime
    actor: str
    action: str
    target: str | None
    outcome: str
    client_address: str | None
    details: dict[str, Any] | None


def record(
    db: sa.Engine | sa.Connection,
    *,
    actor: str,
    action: str,
    target: str | None,
    outcome: Outcome,
    now: datetime,
    api_key_id: int | None = None,
    client_address: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Append one entry (in the caller's transaction when given a Connection)."""
    statement = sa.insert(audit_log).values(
        api_key_id=api_key_id,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        client_address=client_address,
        details=details,
        at=now,
    )
    if isinstance(db, sa.Connection):
        db.execute(statement)
        return
    with db.begin() as connection:
        connection.execute(statement)


def list_entries(
    db: sa.Engine,
    *,
    limit: int = 50,
    before_id: int | None = None,
    actor: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
) -> list[AuditEntry]:
    """Newest first, at most ``limit``; ``before_id`` pages on (the last id of the previous page)."""
    a = audit_log
    query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    if before_id is not None:
        query = query.where(a.c.id < before_id)
    if actor is not None:
        query = query.where(a.c.actor == actor)
    if action is not None:
        query = query.where(a.c.action == action)
    if since is not None:
        query = query.where(a.c.at >= since)
    with db.connect() as connection:
        rows = connection.execute(query).all()
    return [
        AuditEntry(
            id=row.id,
            at=row.at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            client_address=row.client_address,
            details=row.details,
        )
        for row in rows
    ]
