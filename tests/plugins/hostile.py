"""A variable provider that returns what an attacker or a broken backend could, chosen by the user's message.

Loaded by dotted path (``tests.plugins.hostile:HostileProvider``), in-process and by a real ``chatops serve`` (with
the repository on PYTHONPATH). The message text picks the behaviour:

- ``surrogate``: a lone surrogate in a value and in a key of a nested mapping;
- ``nul``: a NUL character in a value;
- ``nan``: a float NaN (PostgreSQL's jsonb refuses it even after every string is clean);
- ``exit`` / ``interrupt``: raise SystemExit / KeyboardInterrupt (BaseException, not Exception) — plug-in code
  that ends the thread it runs on;
- ``block``: wait until :data:`RELEASE` is set (a provider call that takes long);
- anything else: a plain value.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chatops.templating.providers import ProviderContext

RELEASE = threading.Event()
BLOCKED = threading.Event()

STAGES = """\
bot:
  name: Hostile
  start: echo
  timezone: UTC
  stale_after: 10m
providers:
  - name: hostile
    use: tests.plugins.hostile:HostileProvider
    provides: [value, extra]
    timeout: 30s
stages:
  echo:
    reply: echo.j2
    next: echo
"""
ECHO = "Value: {{ hostile.value }} {{ hostile.extra }}"


def write_hostile_bot(folder: Path) -> Path:
    """stages.yaml and templates/ of a one-stage bot that echoes the provider's values; returns stages.yaml."""
    (folder / "templates").mkdir(parents=True, exist_ok=True)
    (folder / "templates" / "echo.j2").write_text(ECHO)
    path = folder / "stages.yaml"
    path.write_text(STAGES)
    return path


class HostileProvider:
    provides: Mapping[str, str] = {"value": "a hostile value", "extra": "a mapping with a hostile key"}

    def __init__(self, spec: Any) -> None:
        self.name = spec.name

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        text = str(context.message.get("text") or "")
        if "surrogate" in text:
            return {"value": "lone \ud800 surrogate", "extra": {"key \udfff": "v"}}
        if "nul" in text:
            return {"value": "nul \x00 here", "extra": {}}
        if "nan" in text:
            return {"value": float("nan"), "extra": {}}
        if "exit" in text:
            raise SystemExit(3)
        if "interrupt" in text:
            raise KeyboardInterrupt
        if "block" in text:
            BLOCKED.set()
            RELEASE.wait(30)
        return {"value": "plain", "extra": {}}
