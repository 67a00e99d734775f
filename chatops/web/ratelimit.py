"""Admin API rate limits (the ``limits`` library): per API key, and per client address for bad keys.

- Each key may make ``CHATOPS_API_RATE_LIMIT`` requests (default ``120/minute``); past that: 429 with
  ``Retry-After`` (seconds until the window resets).
- Requests with a missing or wrong key count against their client address, ``CHATOPS_API_BAD_KEY_LIMIT``
  (default ``10/minute``); past that every request from that address gets 429 before any key lookup, so
  guessing keys costs the guesser time and the database nothing.

Counters live in ``CHATOPS_RATE_LIMIT_STORAGE`` (``memory://``: per process; ``redis://…``: shared by every
process of a deployment). A storage outage lets requests through (logged): a broken Redis must not lock operators
out.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

from limits import RateLimitItem, parse
from limits.strategies import FixedWindowRateLimiter

from chatops.db.api_keys import ApiKey
from chatops.engine.flood import storage
from chatops.web.auth import ApiError

log = logging.getLogger(__name__)


class ApiLimiter:
    """The admin API's limits on one storage; ``namespace`` keeps deployments (or tests) sharing a Redis apart."""

    def __init__(
        self,
        storage_uri: str,
        *,
        per_key: str,
        bad_keys: str,
        namespace: str = "chatops",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:
        # Its own storage: memory:// then counts per app (one per process in production; one per test).
        self._limiter = FixedWindowRateLimiter(storage(storage_uri))
        self.per_key: RateLimitItem = parse(per_key)
        self.bad_keys: RateLimitItem = parse(bad_keys)
        self.namespace = namespace
        self._on_refused = on_refused  # told "api_key" or "bad_key" for every 429 (for /metrics)

    def check_key(self, key: ApiKey) -> None:
        """Count one request of ``key``. Raises ApiError 429 past the limit."""
        identity = (self.namespace, "key", key.prefix)
        if not self._safely(lambda: self._limiter.hit(self.per_key, *identity)):
            raise self._too_many("api_key", self.per_key, identity, f"the API key {key.name!r} made too many requests")

    def check_bad_keys(self, address: str) -> None:
        """Raises ApiError 429 when ``address`` has used up its bad-key allowance (without counting)."""
        identity = (self.namespace, "bad-key", address)
        if not self._safely(lambda: self._limiter.test(self.bad_keys, *identity)):
            raise self._too_many(
                "bad_key", self.bad_keys, identity, f"too many requests with a bad API key from {address}"
            )

    def hit_bad_key(self, address: str) -> None:
        """Count one request from ``address`` with a missing or wrong key."""
        self._safely(lambda: self._limiter.hit(self.bad_keys, self.namespace, "bad-key", address))

    def _safely(self, check: Callable[[], bool]) -> bool:
        try:
            return check()
        except Exception as exc:
            log.warning("rate limit storage unavailable, request let through: %s", exc)
            return True

    def _too_many(self, limit: str, item: RateLimitItem, identity: tuple[str, ...], message: str) -> ApiError:
        if self._on_refused is not None:
            self._on_refused(limit)
        try:
            reset = self._limiter.get_window_stats(item, *identity).reset_time
            wait = max(1, math.ceil(reset - time.time()))
        except Exception:
            wait = item.get_expiry()
        return ApiError(
            429,
            "rate_limited",
            message,
            hint=f"retry in {wait} s; the limit is {item}",
            headers={"Retry-After": str(wait)},
        )
