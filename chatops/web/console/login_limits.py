"""Login attempt limits for the console, with the ``limits`` library on the storage the admin API's limits use
(``CHATOPS_RATE_LIMIT_STORAGE``: ``memory://`` per process, ``redis://…`` shared).

Failed attempts count per client address (20 a minute) and per email (5 a minute, so a password is not guessed
from many addresses). A success does not count. While a limit is exhausted every attempt is refused with 429,
even with the right password, before the password is checked. A storage outage lets attempts through (logged
once per outage), as the admin API's limits do: a broken Redis must not lock the staff out.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from collections.abc import Callable
from typing import TypeVar

from limits import RateLimitItem, parse
from limits.strategies import MovingWindowRateLimiter

from chatops.engine.flood import storage

log = logging.getLogger(__name__)
T = TypeVar("T")
PER_ADDRESS = parse("20/minute")
PER_EMAIL = parse("5/minute")


class LoginLimiter:
    def __init__(self, storage_url: str) -> None:
        self._limiter = MovingWindowRateLimiter(storage(storage_url))
        self._failing = False

    def _safely(self, check: Callable[[], T], fallback: T) -> T:
        try:
            result = check()
        except Exception as exc:  # the storage's own errors (redis connection …) vary by backend
            if not self._failing:
                log.warning("console login limits unavailable, attempts are not limited: %s", exc)
            self._failing = True
            return fallback
        self._failing = False
        return result

    def _keys(self, address: str, email: str) -> list[tuple[RateLimitItem, str]]:
        return [(PER_ADDRESS, f"console-login-address:{address}"), (PER_EMAIL, f"console-login-email:{email}")]

    def blocked(self, address: str, email: str) -> int | None:
        """Seconds until another attempt is allowed, or None when one is allowed now."""

        def wait() -> int | None:
            waits = []
            for item, key in self._keys(address, email):
                if not self._limiter.test(item, key):
                    reset, _ = self._limiter.get_window_stats(item, key)
                    waits.append(max(1, math.ceil(reset - time.time())))
            return max(waits) if waits else None

        return self._safely(wait, None)

    def hit(self, address: str, email: str) -> None:
        """Count a failed attempt."""
        for item, key in self._keys(address, email):
            self._safely(functools.partial(self._limiter.hit, item, key), True)
