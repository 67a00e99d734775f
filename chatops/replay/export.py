"""``chatops export``: the selected conversations written as a corpus file, optionally redacted."""

from __future__ import annotations

from typing import IO

import sqlalchemy as sa

from chatops.replay.corpus import Selection, conversation_json, read_database, write_corpus
from chatops.replay.redact import Redactor


def export_corpus(engine: sa.Engine, out: IO[str], selection: Selection | None = None, *, redact: bool = False) -> int:
    """Write the conversations ``selection`` picks to ``out`` as JSON Lines; returns how many were written.

    Reads the database only. With ``redact`` personal data becomes stable pseudonyms (:mod:`.redact`).
    Raises StorageError when the database is unavailable.
    """
    redactor = Redactor() if redact else None
    lines = (conversation_json(conversation) for conversation in read_database(engine, selection or Selection()))
    return write_corpus(out, (redactor.line(line) for line in lines) if redactor else lines)
