"""What keeps parallel cases apart on one app and database: a clock per case thread, and provider stubs per user.

Every case is a different user (its own conversation, history and provider cache entries), so cases share the
app, the worker code and the database yet cannot see each other.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from chatops.engine.turn import BotRuntime
from chatops.templating.providers import ConfiguredProvider, ProviderContext
from chatops.web.state import utc_now


class CaseClock:
    """A clock each case thread sets and moves on its own; other threads (none call it today) get real time."""

    def __init__(self) -> None:
        self._local = threading.local()

    def __call__(self) -> datetime:
        now: datetime | None = getattr(self._local, "now", None)
        return now if now is not None else utc_now()

    def set(self, moment: datetime) -> None:
        """Freeze this thread's clock at ``moment`` (aware)."""
        self._local.now = moment

    def advance(self, delta: timedelta) -> None:
        """Move this thread's clock forward by ``delta``."""
        self._local.now = self() + delta


class ProviderStubs:
    """Values a case gives for providers, by user; a provider the case does not stub runs for real."""

    def __init__(self) -> None:
        self._by_user: dict[tuple[str, str], Mapping[str, Mapping[str, Any]]] = {}
        self._lock = threading.Lock()

    def give(self, channel: str, user_id: str, stubs: Mapping[str, Mapping[str, Any]]) -> None:
        """From now on, ``user_id`` on ``channel`` gets ``stubs[name]`` from provider ``name``."""
        with self._lock:
            self._by_user[(channel, user_id)] = stubs

    def values(self, context: ProviderContext, name: str) -> Mapping[str, Any] | None:
        """The stub of provider ``name`` for the context's user, or None."""
        with self._lock:
            stubs = self._by_user.get((context.user.channel, context.user.id), {})
        return stubs.get(name)

    def install(self, runtime: BotRuntime) -> None:
        """Route every declared provider of ``runtime`` through these stubs first (the TTL cache is turned off,
        so a stub is never hidden behind a cached real answer)."""
        runner = runtime.variables.runner
        runner.providers = [
            dataclasses.replace(p, provider=_Stubbed(p.provider, p.name, self), cache_ttl=None)
            if isinstance(p, ConfiguredProvider)
            else p
            for p in runner.providers
        ]


class _Stubbed:
    """A provider that answers from the case's stub when it has one, else asks the real provider."""

    def __init__(self, inner: Any, name: str, stubs: ProviderStubs) -> None:
        self.inner = inner
        self.name = name
        self.stubs = stubs

    @property
    def provides(self) -> Mapping[str, str]:
        provided: Mapping[str, str] = self.inner.provides
        return provided

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        stub = self.stubs.values(context, self.name)
        if stub is not None:
            return stub
        values: Mapping[str, Any] = self.inner.fetch(context)
        return values

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
