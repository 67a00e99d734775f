"""Erasure of one person (a data-subject request): their conversations, messages and turns, and audit references.

A person is a ``user_id`` (WhatsApp wa_id or Messenger PSID), on every channel or on one. Their conversations are
deleted one per transaction; the database's ON DELETE CASCADE removes the inbound and outbound messages and turns
(all indexed on conversation_id, so each delete reads only that conversation's rows). Audit entries whose target
names one of those conversations or the user keep their action and time but lose the reference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from chatops.db.connect import storage_errors
from chatops.db.tables import audit_log, conversations, inbound_messages, outbound_messages, turns

FORGOTTEN = "forgotten"


@dataclass
class ErasureReport:
    """What was removed (or, with ``dry_run``, would be): rows per table, and the conversations by channel."""

    user_id: str
    channel: str | None
    dry_run: bool
    conversations: list[dict[str, str | int]] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("conversations", "inbound_messages", "outbound_messages", "turns", "audit_entries_anonymised"), 0
        )
    )


def forget_user(engine: sa.Engine, user_id: str, *, channel: str | None = None, dry_run: bool = False) -> ErasureReport:
    """Delete every conversation of ``user_id`` (on ``channel`` only, if given) with its messages and turns.

    Returns the counts. Raises StorageError when the database fails (what was already deleted stays deleted;
    running it again finishes the job).
    """
    c = conversations.c
    report = ErasureReport(user_id=user_id, channel=channel, dry_run=dry_run)
    query = sa.select(c.id, c.channel, c.account_id).where(c.user_id == user_id).order_by(c.id)
    if channel is not None:
        query = query.where(c.channel == channel)
    with storage_errors(engine), engine.connect() as connection:
        found = connection.execute(query).all()
    for row in found:
        with storage_errors(engine), engine.begin() as connection:
            for table in (inbound_messages, outbound_messages, turns):
                count = connection.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c.conversation_id == row.id)
                ).scalar_one()
                report.counts[table.name] += int(count)
            if not dry_run:
                connection.execute(sa.delete(conversations).where(c.id == row.id))
        report.counts["conversations"] += 1
        report.conversations.append({"id": row.id, "channel": row.channel, "account_id": row.account_id})
    targets = [f"conversation:{row.id}" for row in found] + [f"user:{user_id}"]
    a = audit_log.c
    mentioned = sa.or_(a.target.in_(targets), a.target == user_id)
    with storage_errors(engine), engine.begin() as connection:
        if dry_run:
            count = connection.execute(sa.select(sa.func.count()).select_from(audit_log).where(mentioned)).scalar_one()
        else:
            count = connection.execute(
                sa.update(audit_log).where(mentioned).values(target=FORGOTTEN, details=None)
            ).rowcount
        report.counts["audit_entries_anonymised"] = int(count)
    return report
