"""Text from outside made storable and sendable: the one place that decides what a string may contain.

Webhooks, variable providers, the AI and templates can all produce strings that Python holds happily but that
cannot be encoded (a lone surrogate such as ``"\\ud800"`` has no UTF-8 form) or stored (PostgreSQL refuses NUL in
``text`` and ``jsonb``). Each such character is replaced by U+FFFD, the replacement character, at the boundary
where the text enters, so that nothing downstream (the database, httpx, the Graph API, the logs) can fail on it.

This module imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations

import re
from typing import Any

REPLACEMENT = "\ufffd"
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every NUL and lone surrogate replaced by U+FFFD (unchanged, the same object, when clean)."""
    # A regex search is ~10x cheaper than encoding to UTF-8 for the common, clean case.
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(REPLACEMENT, text)


def clean_value(value: Any) -> Any:
    """A JSON-like value (dicts, lists, tuples, strings, numbers) with every string and key passed through
    :func:`clean_text`. Other values are returned as they are."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k: clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_value(v) for v in value)
    return value
