"""Time values written in stages.yaml: durations (``30s``, ``1h30m``, ``90``) and business hours.

Both parsers raise :class:`InvalidValue` (a ``ValueError`` carrying a hint), which the bot loader turns into a
located BotDefinitionError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

DURATION_FORMS = "30s, 15m, 24h, 7d, combinations like 1h30m, or plain seconds such as 90"
BUSINESS_HOURS_FORMS = (
    "'Mon-Fri 09:00-17:00', several windows joined by ',' or ';' ('Mon-Fri 09:00-17:00, Sat 10:00-14:00'), "
    "day groups joined by '/' ('Mon/Wed 09:00-12:00')"
)

_DURATION = re.compile(r"^(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+(?:\.\d+)?)\s*s)?$")
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_NAMES = dict(
    zip(_DAYS, ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"), strict=True)
)
_WINDOW = re.compile(
    r"^(?P<days>[A-Za-z]+(?:\s*[-–]\s*[A-Za-z]+)?(?:\s*/\s*[A-Za-z]+(?:\s*[-–]\s*[A-Za-z]+)?)*)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*[-–]\s*(?P<end>\d{1,2}:\d{2})$"
)


class InvalidValue(ValueError):
    """A value in stages.yaml is malformed. ``at`` points below the current node; ``key`` means at the key."""

    def __init__(
        self, message: str, *, hint: str | None = None, at: tuple[str | int, ...] = (), key: bool = False
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.at = at
        self.key = key


def parse_duration(value: object) -> timedelta:
    """``30s``/``15m``/``24h``/``7d``, combinations (``1h30m``) or plain seconds (int, float or digits).

    Raises InvalidValue for anything else, and for zero or negative durations.
    """
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or value is None:
        raise InvalidValue(f"invalid duration {value!r}", hint=f"accepted forms: {DURATION_FORMS}")
    elif isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        match = _DURATION.match(text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and match:
            days, hours, minutes, secs = (float(part) if part else 0.0 for part in match.groups())
            seconds = days * 86400 + hours * 3600 + minutes * 60 + secs
        else:
            raise InvalidValue(f"invalid duration '{value}'", hint=f"accepted forms: {DURATION_FORMS}")
    else:
        raise InvalidValue(f"invalid duration {value!r}", hint=f"accepted forms: {DURATION_FORMS}")
    if seconds <= 0:
        raise InvalidValue(f"duration {value!r} must be greater than zero", hint=f"accepted forms: {DURATION_FORMS}")
    return timedelta(seconds=seconds)


@dataclass(frozen=True)
class OpeningWindow:
    """Open on ``weekdays`` (0 = Monday) from ``start`` to ``end``; an ``end`` at or before ``start`` runs past
    midnight into the next day; ``24:00`` is ``time.max`` (the end of the day)."""

    weekdays: frozenset[int]
    start: time
    end: time


@dataclass(frozen=True)
class BusinessHours:
    """Opening windows as written (``text``) and parsed (``windows``)."""

    text: str
    windows: tuple[OpeningWindow, ...]

    def is_open(self, local: datetime) -> bool:
        """Whether the wall-clock time ``local`` (already in the bot's timezone) falls in a window."""
        now, day = local.time().replace(tzinfo=None), local.weekday()
        for window in self.windows:
            if window.start < window.end:
                if day in window.weekdays and window.start <= now < window.end:
                    return True
            elif (day in window.weekdays and now >= window.start) or (
                (day - 1) % 7 in window.weekdays and now < window.end
            ):
                return True
        return False


def parse_business_hours(value: object) -> BusinessHours:
    """``Mon-Fri 09:00-17:00`` (several windows joined by ``,`` or ``;``, or a list of them).

    Day ranges may wrap (``Fri-Mon``), day groups join with ``/``; a window ending at or before its start runs past
    midnight, ``24:00`` ends at midnight. Raises InvalidValue otherwise.
    """
    if isinstance(value, BusinessHours):
        return value
    if isinstance(value, str):
        parts = [part.strip() for part in re.split(r"[;,]", value) if part.strip()]
        text = value
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        parts = [part.strip() for item in value for part in re.split(r"[;,]", item) if part.strip()]
        text = ", ".join(item.strip() for item in value)
    else:
        raise InvalidValue(f"invalid business hours {value!r}", hint=f"accepted forms: {BUSINESS_HOURS_FORMS}")
    if not parts:
        raise InvalidValue("business hours are empty", hint=f"accepted forms: {BUSINESS_HOURS_FORMS}")
    return BusinessHours(text=text, windows=tuple(_window(part) for part in parts))


def _window(text: str) -> OpeningWindow:
    bad = InvalidValue(f"invalid business hours '{text}'", hint=f"accepted forms: {BUSINESS_HOURS_FORMS}")
    match = _WINDOW.match(text)
    if not match:
        raise bad
    weekdays: set[int] = set()
    for group in match["days"].split("/"):
        ends = [end.strip().lower() for end in re.split(r"[-–]", group)]
        if any(end[:3] not in _DAYS or not _DAY_NAMES[end[:3]].startswith(end) for end in ends):
            raise InvalidValue(
                f"invalid business hours '{text}': unknown day in '{group.strip()}'",
                hint="days are Mon, Tue, Wed, Thu, Fri, Sat, Sun (or their full names)",
            )
        first, last = _DAYS.index(ends[0][:3]), _DAYS.index(ends[-1][:3])
        weekdays.update((first + step) % 7 for step in range((last - first) % 7 + 1))
    start, end = _clock_time(match["start"], bad), _clock_time(match["end"], bad)
    if start == time.max:
        raise bad
    return OpeningWindow(weekdays=frozenset(weekdays), start=start, end=end)


def _clock_time(text: str, bad: InvalidValue) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if (hours, minutes) == (24, 0):
        return time.max
    if hours > 23 or minutes > 59:
        raise bad
    return time(hours, minutes)
