"""Tolerant readers for Meta's webhook JSON, and text limits for the request builders.

Meta adds fields and types without notice, so the parsers read every value through these helpers: a value of
the wrong type reads as "absent" instead of raising in the middle of a batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    """``value`` as a string (numbers too: Meta sends some ids as numbers), ``None`` when absent or a container."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        return str(value)
    return None


def as_int(value: Any) -> int | None:
    """``value`` as an int (Meta sends error codes as numbers, some as strings), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def as_float(value: Any) -> float | None:
    """``value`` as a float (coordinates), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def utc_from_epoch(value: Any, *, milliseconds: bool = False) -> datetime | None:
    """A timezone-aware UTC datetime from epoch seconds (WhatsApp: strings) or milliseconds (Messenger)."""
    number = as_float(value)
    if number is None:
        return None
    if milliseconds:
        number /= 1000.0
    try:
        return datetime.fromtimestamp(number, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return None


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in an ellipsis when cut.

    Meta rejects the whole message when one field is too long; a shortened title or body is the better failure.
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"
