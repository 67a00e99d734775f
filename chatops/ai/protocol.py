"""The AIClient protocol and what its calls return (everything the turn trace records)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from chatops.ai.prompt import ChatRequest, Message
from chatops.config.memory_schema import ExtractField


@dataclass(frozen=True)
class Usage:
    """Token counts as reported by the model server (zeros when it reports none, and offline)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True, kw_only=True)
class ChatResult:
    """The model's reply and its trace: the messages sent, the model that answered, usage and latency.

    ``latency_ms`` covers the whole call, retries and their waits included.
    """

    text: str
    model: str
    usage: Usage
    latency_ms: float
    request_messages: list[Message]
    finish_reason: str | None


@dataclass(frozen=True, kw_only=True)
class IntentResult:
    """The intent the model chose (None: none of the allowed ones), its raw answer and the same trace."""

    intent: str | None
    raw: str | None
    model: str
    usage: Usage
    latency_ms: float
    request_messages: list[Message]
    finish_reason: str | None


@dataclass(frozen=True, kw_only=True)
class ExtractResult:
    """What the model proposed for an ``extract:`` stage's fields (not yet validated), its raw answer, the trace."""

    values: dict[str, Any]
    raw: str | None
    model: str
    usage: Usage
    latency_ms: float
    request_messages: list[Message]
    finish_reason: str | None


@runtime_checkable
class AIClient(Protocol):
    """Something that writes replies and classifies intents: OpenAI, any compatible server, or offline."""

    @property
    def mode(self) -> str:
        """``openai`` or ``offline`` (shown in banners, ``doctor`` and ``simulate --json``)."""
        ...

    def reply(self, request: ChatRequest) -> ChatResult:
        """The model's reply to ``request``. Raises AIError when the backend fails after its retries."""
        ...

    def classify(self, request: ChatRequest, intents: Sequence[str]) -> IntentResult:
        """One of ``intents`` for the user's text, or None. Raises AIError when the backend fails."""
        ...

    def extract(
        self, request: ChatRequest, fields: Mapping[str, ExtractField], *, asking: str | None = None
    ) -> ExtractResult:
        """Values for ``fields`` found in the user's text (absent: not given). Raises AIError when the backend
        fails."""
        ...
