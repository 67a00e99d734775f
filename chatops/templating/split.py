"""Split a long reply into messages that fit a channel's text cap, at the most natural boundary available.

Boundaries are tried from the coarsest: paragraphs (a blank line), lines, sentences (after ``.``, ``!``, ``?``,
``…``), words (whitespace). A part is never cut inside a word, except a single word longer than the limit, which is
cut hard. Parts are stripped of surrounding whitespace; whitespace inside a part is kept as written. Parts are packed
greedily, so a short closing sentence shares a message with what follows it.
"""

from __future__ import annotations

import re
from typing import Final

CHANNEL_TEXT_LIMITS: Final[dict[str, int]] = {"whatsapp": 4096, "messenger": 2000}
ELLIPSIS: Final = "…"

# Each pattern matches the separator that ends a segment; the separator stays with the segment before it.
_BOUNDARIES: Final = (
    re.compile(r"\n[^\S\n]*\n\s*"),  # paragraph: a blank line
    re.compile(r"\n\s*"),  # line
    re.compile(r"[.!?…]+[\"'”’)\]]*\s+"),  # sentence
    re.compile(r"\s+"),  # word
)


def split_message(text: str, *, limit: int, max_parts: int) -> list[str]:
    """``text`` as at most ``max_parts`` stripped, non-empty parts of at most ``limit`` characters each.

    When the text needs more than ``max_parts`` parts, the last part is shortened (at a word boundary when it can
    be) and ends with "…". Empty or all-whitespace text gives ``[]``. Raises ValueError for ``limit < 2`` or
    ``max_parts < 1``.
    """
    if limit < 2 or max_parts < 1:
        raise ValueError(f"split_message needs limit >= 2 and max_parts >= 1 (got {limit}, {max_parts})")
    parts = _pack(text.strip(), limit, 0)
    if len(parts) <= max_parts:
        return parts
    kept = parts[: max_parts - 1]
    kept.append(_with_ellipsis(parts[max_parts - 1], limit))
    return kept


def _pack(text: str, limit: int, level: int) -> list[str]:
    """Greedy packing of ``text``'s segments at boundary ``level``; finer levels only for segments too long."""
    if len(text) <= limit:
        return [text] if text else []
    if level == len(_BOUNDARIES):
        return [text[i : i + limit] for i in range(0, len(text), limit)]  # one word longer than the limit
    parts: list[str] = []
    current = ""  # the part being filled, with the trailing separator of its last segment
    for segment in _segments(text, _BOUNDARIES[level]):
        if len((current + segment).strip()) <= limit:
            current += segment
            continue
        if current.strip():
            parts.append(current.strip())
        current = ""
        if len(segment.strip()) <= limit:
            current = segment
            continue
        pieces = _pack(segment.strip(), limit, level + 1)
        parts.extend(pieces[:-1])
        current = pieces[-1] + segment[len(segment.rstrip()) :]
    if current.strip():
        parts.append(current.strip())
    return parts


def _segments(text: str, boundary: re.Pattern[str]) -> list[str]:
    segments: list[str] = []
    start = 0
    for match in boundary.finditer(text):
        if match.end() > start:
            segments.append(text[start : match.end()])
            start = match.end()
    if start < len(text):
        segments.append(text[start:])
    return segments


def _with_ellipsis(part: str, limit: int) -> str:
    if len(part) + len(ELLIPSIS) <= limit:
        return part + ELLIPSIS
    room = limit - len(ELLIPSIS)
    cut = part[: room + 1]
    # Back up to the last whitespace so the cut falls between words; a single long word is cut hard.
    boundary = max((i for i, char in enumerate(cut) if char.isspace()), default=-1)
    head = part[:boundary].rstrip() if boundary > 0 else ""
    if not head:
        head = part[:room].rstrip()
    return head + ELLIPSIS
