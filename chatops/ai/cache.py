"""An on-disk cache of AI answers keyed by the full request, around any :class:`AIClient`.

``replay`` (and ``chatops test``) wrap their client in a :class:`CachedAIClient`: the same request — call kind,
model, messages as sent, temperature, max_tokens, and the intents or extraction fields — is answered from disk,
so a re-run costs nothing and gives the same answers. The key is the SHA-256 of that request as canonical JSON;
each answer is one small JSON file (``<dir>/<2 hex>/<64 hex>.json``) written atomically, so concurrent runs and
threads share a folder safely. Failures (AIError) are never cached. A cached answer keeps the latency and
usage of the call that produced it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chatops.ai.extract import build_extract_messages
from chatops.ai.prompt import ChatRequest, build_classify_messages, build_messages
from chatops.ai.protocol import AIClient, ChatResult, ExtractResult, IntentResult, Usage
from chatops.config.memory_schema import ExtractField

CACHE_FORMAT = 1  # part of every key: a change in what is stored invalidates old entries


class CachedAIClient:
    """An AIClient that answers repeated requests from ``directory`` and asks ``inner`` otherwise.

    Thread-safe. ``hits`` and ``misses`` count the calls answered from disk and those sent to ``inner``.
    """

    def __init__(self, inner: AIClient, directory: Path) -> None:
        self.inner = inner
        self.directory = directory
        self.hits = 0
        self.misses = 0
        self._lock = threading.Lock()

    @property
    def mode(self) -> str:
        """The wrapped client's mode (``openai`` or ``offline``)."""
        return self.inner.mode

    def reply(self, request: ChatRequest) -> ChatResult:
        """The model's reply, from the cache when this exact request was answered before."""
        key = request_key("reply", request, build_messages(request))
        stored = self._load(key)
        if stored is not None:
            return ChatResult(**_result(stored))
        result = self.inner.reply(request)
        self._store(key, asdict(result))
        return result

    def classify(self, request: ChatRequest, intents: Sequence[str]) -> IntentResult:
        """The chosen intent, from the cache when this exact request was answered before."""
        key = request_key("classify", request, build_classify_messages(request, intents), {"intents": list(intents)})
        stored = self._load(key)
        if stored is not None:
            return IntentResult(**_result(stored))
        result = self.inner.classify(request, intents)
        self._store(key, asdict(result))
        return result

    def extract(
        self, request: ChatRequest, fields: Mapping[str, ExtractField], *, asking: str | None = None
    ) -> ExtractResult:
        """The proposed field values, from the cache when this exact request was answered before."""
        extra = {"fields": {name: field.model_dump(mode="json") for name, field in fields.items()}}
        key = request_key("extract", request, build_extract_messages(request, fields, asking=asking), extra)
        stored = self._load(key)
        if stored is not None:
            return ExtractResult(**_result(stored))
        result = self.inner.extract(request, fields, asking=asking)
        self._store(key, asdict(result))
        return result

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def _load(self, key: str) -> dict[str, Any] | None:
        try:
            stored = json.loads(self._path(key).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # absent, or a torn/foreign file: ask the model again
            stored = None
        with self._lock:
            if isinstance(stored, dict):
                self.hits += 1
                return stored
            self.misses += 1
        return None

    def _store(self, key: str, result: dict[str, Any]) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(result, out, ensure_ascii=False, sort_keys=True)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def request_key(kind: str, request: ChatRequest, messages: Sequence[Mapping[str, str]], extra: Any = None) -> str:
    """The cache key of one call: SHA-256 over the call kind, the model, the messages and the parameters."""
    canonical = {
        "format": CACHE_FORMAT,
        "kind": kind,
        "model": request.model,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "messages": [dict(message) for message in messages],
        "extra": extra,
    }
    encoded = json.dumps(canonical, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(encoded.encode("utf-8")).hexdigest()


def _result(stored: dict[str, Any]) -> dict[str, Any]:
    return {**stored, "usage": Usage(**stored.get("usage", {}))}
