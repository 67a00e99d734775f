"""How big a value a template operation would build, worked out before the operation builds it.

The sandbox (:mod:`chatops.templating.sandbox`) asks these functions before it lets an operator, filter or method
run, because checking a result afterwards is too late: ``'x'.ljust(10**9)`` has already taken a gigabyte by then.
Each function returns the number of characters (or items) the result would have, exactly or as an upper bound,
without building it. Text sizes of containers (``str([...])``) are estimated from the lengths of their parts: the
estimate can be short of the real text by the escapes ``repr`` adds (at most 10 characters for 1), never more.
Walks stop as soon as they pass ``limit``, so estimating a huge value costs no more than the limit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, time, timedelta
from typing import Any

SIZED_TYPES = (str, bytes, bytearray, list, tuple, dict, set, frozenset)
_DEFAULT_TEXT = 64  # characters assumed for str() of a datetime, a namespace stand-in or another small object
_FLOAT_DIGITS = 330  # the longest fixed-point text of a float ('%f' % 1e308) without precision

# One %-conversion: optional (key), flags, width (digits or *), precision (digits or *), length, type.
_PRINTF = re.compile(
    r"%(?:\((?P<key>[^)]*)\))?[-#0 +]*(?P<width>\*|\d+)?(?:\.(?P<precision>\*|\d+))?[hlL]?(?P<type>[a-zA-Z%])"
)
# A standard format spec: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?", re.S)


def size_of(value: Any) -> int | None:
    """``len(value)`` for strings, bytes and containers; None for other values."""
    return len(value) if isinstance(value, SIZED_TYPES) else None


def text_size(value: Any, limit: int) -> int:
    """The characters ``str(value)`` would have; stops counting (returns more than ``limit``) once past it."""
    if isinstance(value, str):
        return len(value)
    total = 0
    pending: list[tuple[Any, bool]] = [(value, False)]  # (value, inside a container: str() of it uses repr)
    while pending and total <= limit:
        item, nested = pending.pop()
        if isinstance(item, str):
            total += len(item) + (2 if nested else 0)
        elif isinstance(item, bytes | bytearray):
            total += len(item) + 3
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() * 3 // 10 + 2  # decimal digits of a 2**n number: about 0.3 n
        elif isinstance(item, float):
            total += 24
        elif isinstance(item, Mapping):
            total += 2
            keys_only = not isinstance(item, dict)  # other mappings (provider namespaces) show their keys
            for key in item:
                total += 4
                pending.append((key, True))
                if not keys_only:
                    pending.append((item[key], True))
                if total > limit:
                    break
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2
            for element in item:
                total += 2
                pending.append((element, True))
                if total > limit:
                    break
        elif isinstance(item, datetime | date | time | timedelta):
            total += 32
        else:
            total += _DEFAULT_TEXT
    return total


def repeat_size(left: Any, right: Any) -> int | None:
    """Items or characters of ``left * right`` when one side is a sequence and the other an int."""
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, str | bytes | list | tuple) and isinstance(count, int) and not isinstance(count, bool):
            return len(sequence) * max(count, 0)
    return None


def concat_size(left: Any, right: Any) -> int | None:
    """Items or characters of ``left + right`` for two sequences."""
    if isinstance(left, str | bytes | list | tuple) and isinstance(right, str | bytes | list | tuple):
        return len(left) + len(right)
    return None


def product_bits(left: Any, right: Any) -> int | None:
    """Bits of ``left * right`` for two integers (squaring in a loop doubles them every time)."""
    if isinstance(left, int) and isinstance(right, int) and not isinstance(left | right, bool):
        return left.bit_length() + right.bit_length()
    return None


def power_bits(left: Any, right: Any) -> int | None:
    """Bits of ``left ** right`` for integers."""
    if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        return left.bit_length() * right
    return None


def printf_size(template: str, args: Any, limit: int) -> int:
    """Characters of ``template % args``: widths and precisions (also ``*`` ones taken from ``args``) count."""
    positional: Sequence[Any] = args if isinstance(args, tuple) else (args,)
    index = 0
    total = len(template)
    for match in _PRINTF.finditer(template):
        kind = match["type"]
        if kind == "%":
            continue
        sizes = []
        for part in (match["width"], match["precision"]):
            if part == "*":
                star = positional[index] if index < len(positional) else 0
                index += 1
                sizes.append(abs(star) if isinstance(star, int) else 0)
            else:
                sizes.append(int(part) if part else 0)
        width, precision = sizes
        if match["key"] is not None and isinstance(args, Mapping):
            value = args.get(match["key"])
        else:
            value = positional[index] if index < len(positional) else None
            index += 1
        total += max(width, _field_text(value, kind, precision, limit))
        if total > limit:
            break
    return total


def format_field_size(value: Any, spec: str, limit: int) -> int:
    """Characters of ``format(value, spec)`` for one ``str.format`` field (nested ``{w}`` already filled in)."""
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:  # a type's own mini-language (datetime: strftime codes): a few characters per spec character
        return len(spec) * 16 + _DEFAULT_TEXT
    width = int(match["width"] or 0)
    precision = int(match["precision"] or 0)
    if spec and (spec[-1].isalpha() or spec[-1] == "%"):
        kind = spec[-1]
    else:  # no type: numbers format as themselves, everything else as str()
        kind = "d" if isinstance(value, int) else "g" if isinstance(value, float) else "s"
    return max(width, _field_text(value, kind, precision, limit))


def _field_text(value: Any, kind: str, precision: int, limit: int) -> int:
    if kind in "sra":
        size = text_size(value, limit) * (10 if kind in "ra" else 1)
        return min(size, precision) if precision and kind == "s" else size
    if kind in "fF%":
        return _FLOAT_DIGITS + precision
    if isinstance(value, int):
        return max(value.bit_length() * 3 // 10 + 2, precision)
    return 32 + precision


def method_size(owner: Any, name: str, args: Sequence[Any], kwargs: Mapping[str, Any], limit: int) -> int | None:
    """Characters, items or bytes a method of a string, bytes or int would build; None when it cannot grow.

    Covers what the immutable sandbox lets a template call and what can return more than a small multiple of its
    inputs: padding to a width, tab expansion, replace, join, translate, int.to_bytes.
    """
    options = dict(kwargs)
    if isinstance(owner, str | bytes):
        text: Any = owner  # str or bytes: their methods take arguments of their own type
        if name in ("ljust", "rjust", "center", "zfill"):
            width = _argument(args, options, 0, "width", 0)
            return max(len(owner), width if isinstance(width, int) else 0)
        if name == "expandtabs":
            tabsize = _argument(args, options, 0, "tabsize", 8)
            tabs: int = text.count("\t" if isinstance(owner, str) else b"\t")
            return len(owner) + tabs * (tabsize if isinstance(tabsize, int) else 8)
        if name == "replace":
            old = _argument(args, options, 0, "old", "")
            new = _argument(args, options, 1, "new", "")
            count = _argument(args, options, 2, "count", -1)
            if not isinstance(old, str | bytes) or not isinstance(new, str | bytes) or type(old) is not type(owner):
                return None
            found = text.count(old) if old else len(owner) + 1  # "" matches between every character
            if isinstance(count, int) and count >= 0:
                found = min(found, count)
            return len(owner) + found * max(len(new) - len(old), 0)
        if name == "join":
            items = _argument(args, options, 0, "iterable", ())
            return joined_size(owner, items, limit)
        if name == "translate":
            table = _argument(args, options, 0, "table", None)
            longest = 1
            if isinstance(table, Mapping):
                longest = max([len(v) for v in table.values() if isinstance(v, str | bytes)] + [1])
            return len(owner) * longest
    if isinstance(owner, int) and name == "to_bytes":
        length = _argument(args, options, 0, "length", 1)
        return int(length) if isinstance(length, int) else None
    return None


def joined_size(separator: Any, items: Any, limit: int) -> int:
    """Characters of ``separator.join(items)`` (each item as text); ``items`` must be sized (a list or tuple)."""
    if not isinstance(items, Sequence):
        return 0
    total = max(len(items) - 1, 0) * text_size(separator, limit)
    for item in items:
        total += text_size(item, limit)
        if total > limit:
            break
    return total


def lines_size(text: str, prefix: Any) -> int:
    """Characters of ``text`` with ``prefix`` (a string or a number of spaces) added to every line."""
    width = len(prefix) if isinstance(prefix, str) else prefix if isinstance(prefix, int) else 0
    return len(text) + (text.count("\n") + 1) * max(width, 0)


def _argument(args: Sequence[Any], options: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return options.get(name, default)
