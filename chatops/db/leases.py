"""Leases on turns (``conversations.locked_by/locked_until``) and sends (the same columns of a ``sending`` row).

A process renews every lease it holds in one statement per table (:func:`renew_leases`); a lease whose holder
stopped renewing it runs out ``CHATOPS_LEASE_SECONDS`` after the last renewal. An expired conversation lease is
simply claimable again (:func:`~chatops.db.inbox.claim_conversation`); an expired send goes back to ``pending``
through :func:`recover_expired_sends`. A process that starts frees at once what a previous incarnation of itself
left (:func:`recover_incarnation`): holders are named ``<instance>/<incarnation>/<role>``, and two processes of
one instance never run at the same time, so rows of the same instance but another incarnation belong to a process
that has exited.

Every function takes the time as ``now`` and raises SQLAlchemy errors when the database fails.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from chatops.db.tables import conversations, outbound_messages


@dataclass(frozen=True)
class Recovered:
    """What :func:`recover_incarnation` took back: conversation leases and replies left ``sending``."""

    turns: int
    sends: int


def _sending() -> list[sa.ColumnElement[bool]]:
    o = outbound_messages.c
    # next_attempt_at IS NOT NULL keeps the read inside ix_outbound_messages_unsent (the unsent rows only).
    return [o.next_attempt_at.is_not(None), o.status == "sending"]


def renew_leases(
    engine: sa.Engine, *, turns: Mapping[int, str], sends: Mapping[int, str], until: datetime
) -> tuple[int, int]:
    """Extend to ``until`` the conversation leases ``turns`` and the send leases ``sends`` (row id → holder).

    One statement per table, by primary key; a lease another holder has taken meanwhile is left alone. Returns how
    many of each were renewed.
    """
    c, o = conversations.c, outbound_messages.c
    renewed_turns = renewed_sends = 0
    with engine.begin() as connection:
        if turns:
            renewed_turns = connection.execute(
                conversations.update()
                .where(c.id.in_(list(turns)), c.locked_by.in_(sorted(set(turns.values()))))
                .values(locked_until=until)
            ).rowcount
        if sends:
            renewed_sends = connection.execute(
                outbound_messages.update()
                .where(o.id.in_(list(sends)), o.locked_by.in_(sorted(set(sends.values()))), *_sending())
                .values(locked_until=until)
            ).rowcount
    return int(renewed_turns), int(renewed_sends)


def recover_incarnation(engine: sa.Engine, *, instance: str, current: str, now: datetime) -> Recovered:
    """Free the leases held by earlier incarnations of ``instance`` (holders ``instance/…`` not ``current…``).

    Conversation leases are released (claimable at once); replies left ``sending`` go back to ``pending``, due now
    (Meta may have received them: docs/operations.md). ``current`` is this incarnation's holder prefix.
    """
    c, o = conversations.c, outbound_messages.c
    prefix = f"{instance}/"
    with engine.begin() as connection:
        turns = connection.execute(
            conversations.update()
            .where(
                c.locked_by.startswith(prefix, autoescape=True),
                sa.not_(c.locked_by.startswith(current, autoescape=True)),
            )
            .values(locked_by=None, locked_until=None)
        ).rowcount
        sends = connection.execute(
            outbound_messages.update()
            .where(
                *_sending(),
                o.locked_by.startswith(prefix, autoescape=True),
                sa.not_(o.locked_by.startswith(current, autoescape=True)),
            )
            .values(status="pending", next_attempt_at=now, locked_by=None, locked_until=None, updated_at=now)
        ).rowcount
    return Recovered(int(turns), int(sends))


def recover_expired_sends(engine: sa.Engine, *, now: datetime, lease: timedelta, keep: Collection[int] = ()) -> int:
    """Put ``sending`` rows whose lease ran out back to ``pending``, due now; returns how many.

    A row claimed before send leases existed (``locked_until`` NULL) expires ``lease`` after its claim. ``keep``
    are rows the caller is sending right now (never taken back from under it, even when a database outage kept
    it from renewing them).
    """
    o = outbound_messages.c
    expired = sa.or_(o.locked_until < now, sa.and_(o.locked_until.is_(None), o.updated_at < now - lease))
    query = outbound_messages.update().where(*_sending(), expired)
    if keep:
        query = query.where(o.id.not_in(list(keep)))
    with engine.begin() as connection:
        result = connection.execute(
            query.values(status="pending", next_attempt_at=now, locked_by=None, locked_until=None, updated_at=now)
        )
    return int(result.rowcount)
