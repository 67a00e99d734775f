"""An AIClient that reports every call's time, tokens and failure to a callback (for ``/metrics``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from chatops.ai.prompt import ChatRequest
from chatops.ai.protocol import AIClient, ChatResult, ExtractResult, IntentResult, Usage
from chatops.config.memory_schema import ExtractField

OnAICall = Callable[[str, float, Usage | None, str | None], None]
"""Told (call, seconds, usage or None, error type or None) after every ``reply``/``classify``/``extract``."""

_Result = TypeVar("_Result", ChatResult, IntentResult, ExtractResult)


class MeteredAI:
    """Wraps ``inner``: same answers and errors, and ``on_call`` after each call (the callback must not raise)."""

    def __init__(self, inner: AIClient, on_call: OnAICall) -> None:
        self.inner = inner
        self._on_call = on_call

    @property
    def mode(self) -> str:
        return self.inner.mode

    def reply(self, request: ChatRequest) -> ChatResult:
        return self._timed("reply", lambda: self.inner.reply(request))

    def classify(self, request: ChatRequest, intents: Sequence[str]) -> IntentResult:
        return self._timed("classify", lambda: self.inner.classify(request, intents))

    def extract(
        self, request: ChatRequest, fields: Mapping[str, ExtractField], *, asking: str | None = None
    ) -> ExtractResult:
        return self._timed("extract", lambda: self.inner.extract(request, fields, asking=asking))

    def _timed(self, call: str, run: Callable[[], _Result]) -> _Result:
        started = time.perf_counter()
        try:
            result = run()
        except Exception as exc:
            self._on_call(call, time.perf_counter() - started, None, type(exc).__name__)
            raise
        self._on_call(call, time.perf_counter() - started, result.usage, None)
        return result
