"""``bot_reloads``: one row per accepted bot reload; the newest id is the deployment's bot version."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from chatops.db.tables import bot_reloads


def record_reload(db: sa.Engine, *, version: str, actor: str, now: datetime) -> int:
    """Append a reload (``version``: the definition's content hash); returns its id."""
    with db.begin() as connection:
        return int(
            connection.execute(
                sa.insert(bot_reloads).values(version=version, actor=actor, at=now).returning(bot_reloads.c.id)
            ).scalar_one()
        )


def latest_reload_id(db: sa.Engine) -> int:
    """The newest reload's id (0 when there was none)."""
    with db.connect() as connection:
        return int(connection.execute(sa.select(sa.func.coalesce(sa.func.max(bot_reloads.c.id), 0))).scalar_one())


def reload_version(db: sa.Engine, reload_id: int) -> str | None:
    """The definition version recorded with reload ``reload_id``."""
    with db.connect() as connection:
        return connection.execute(
            sa.select(bot_reloads.c.version).where(bot_reloads.c.id == reload_id)
        ).scalar_one_or_none()
