"""Tolerant readers for Meta's webhook JSON, and text limits for the request builders.

Meta adds fields and types without notice, so the parsers read every value through these helpers: a value of
the wrong type reads as "absent" instead of raising in the middle of a batch. So does a value no real
payload carries and the database could not hold: a number beyond its range, an id longer than its column.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

INT_RANGE = range(-(2**31), 2**31)  # error codes are stored as 32-bit integers; Meta's are six digits at most


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


def as_id(value: Any, limit: int) -> str | None:
    """``value`` as a non-empty identifier (see :func:`as_str`) of at most ``limit`` characters, else ``None``.

    Meta's ids are far shorter than the columns that hold them (``chatops.channels.events`` names the limits);
    a longer one is not cut, since a cut id could name another user or message.
    """
    text = as_str(value)
    return text if text and len(text) <= limit else None


def as_int(value: Any) -> int | None:
    """``value`` as a 32-bit int (Meta sends error codes as numbers, some as strings), else ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and value.strip().lstrip("-").isdigit():
        try:
            number = int(value)
        except ValueError:  # digits int() does not read ("²"), or past Python's 4300-digit limit
            return None
    else:
        return None
    return number if number in INT_RANGE else None


def as_float(value: Any) -> float | None:
    """``value`` as a finite float (coordinates, timestamps), else ``None`` (NaN, infinities, 10**400 too)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):  # OverflowError: an int beyond the float range
        return None
    return number if math.isfinite(number) else None


def unusable(fields: dict[str, tuple[Any, Any]]) -> str:
    """Why an item cannot be stored, from ``{name: (raw value, value read)}``: each field read as ``None``,
    with its raw value when there was one, e.g. ``timestamp 1e+400 unusable, id missing``."""
    reasons = []
    for name, (raw, read) in fields.items():
        if read is None:
            reasons.append(f"{name} missing" if raw is None or raw == "" else f"{name} {clip(repr(raw), 40)} unusable")
    return ", ".join(reasons)


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
