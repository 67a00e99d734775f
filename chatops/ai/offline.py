"""The offline responder: a deterministic, labelled stand-in for the model, with no network.

Used when no API key is configured, so ``make run`` and ``simulate`` work on a fresh machine. Every reply
starts with ``[offline AI]``, echoes the user's message and names the stage's prompt (its first line), so
nobody mistakes it for a real answer:

    [offline AI] You said: "where is my order?" · Prompt: "You are Northwind's support assistant." ·
    Set OPENAI_API_KEY for real replies.

``classify`` matches intent names against the user's text: an intent matches when every word of its name
(split on ``_``, ``-``, ``.`` and spaces) starts a word of the text, case-insensitively — ``refund`` matches
"I want a refund" and "refunds?", ``order_status`` matches "status of my order". The first listed intent
that matches wins; none matching gives None.

``extract`` follows the field rules documented in :mod:`chatops.ai.extract` (first number, named choice …).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from chatops.ai.extract import build_extract_messages, offline_values
from chatops.ai.prompt import ChatRequest, allowed_intents, build_classify_messages, build_messages
from chatops.ai.protocol import ChatResult, ExtractResult, IntentResult, Usage
from chatops.config.memory_schema import ExtractField

OFFLINE_LABEL = "[offline AI]"
OFFLINE_MODEL = "offline"
_ECHO_CHARS = 80
_PROMPT_CHARS = 80


class OfflineResponder:
    """An AIClient that answers locally and deterministically: the same request gives the same result.

    Usage is reported as zero tokens and latency as 0 ms (nothing was measured), so traces and
    ``simulate --json`` output stay reproducible.
    """

    @property
    def mode(self) -> Literal["offline"]:
        """Always ``offline``."""
        return "offline"

    def reply(self, request: ChatRequest) -> ChatResult:
        """A labelled echo of the user's text and of the stage prompt's first line. Sends nothing."""
        echo = _shorten(request.user_text, _ECHO_CHARS)
        parts = [f'{OFFLINE_LABEL} You said: "{echo}"' if echo else f"{OFFLINE_LABEL} You sent no text."]
        first_line = _first_line(request.system_prompt)
        if first_line:
            parts.append(f'Prompt: "{_shorten(first_line, _PROMPT_CHARS)}"')
        parts.append("Set OPENAI_API_KEY for real replies.")
        return ChatResult(
            text=" · ".join(parts),
            model=OFFLINE_MODEL,
            usage=Usage(),
            latency_ms=0.0,
            request_messages=build_messages(request),
            finish_reason="stop",
        )

    def classify(self, request: ChatRequest, intents: Sequence[str]) -> IntentResult:
        """The first of ``intents`` whose name's words all start words of the user's text, else None."""
        words = re.findall(r"\w+", request.user_text.casefold())
        chosen = next((name for name in allowed_intents(intents) if _mentions(words, name)), None)
        return IntentResult(
            intent=chosen,
            raw=None,
            model=OFFLINE_MODEL,
            usage=Usage(),
            latency_ms=0.0,
            request_messages=build_classify_messages(request, intents),
            finish_reason="stop",
        )

    def extract(
        self, request: ChatRequest, fields: Mapping[str, ExtractField], *, asking: str | None = None
    ) -> ExtractResult:
        """The fields found in the user's text by fixed rules (see :mod:`chatops.ai.extract`). Sends nothing."""
        values = offline_values(request.user_text, fields, asking=asking)
        return ExtractResult(
            values=values,
            raw=None,
            model=OFFLINE_MODEL,
            usage=Usage(),
            latency_ms=0.0,
            request_messages=build_extract_messages(request, fields, asking=asking),
            finish_reason="stop",
        )


def _mentions(words: list[str], intent: str) -> bool:
    parts = [part for part in re.split(r"[\s_.\-]+", intent.casefold()) if part]
    return bool(parts) and all(any(word.startswith(part) for word in words) for part in parts)


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def _shorten(text: str, limit: int) -> str:
    """``text`` on one line, cut at a word boundary to about ``limit`` characters, ``…`` when cut."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[:limit].rsplit(" ", 1)[0] or flat[:limit]
    return cut.rstrip(" ,.;:") + "…"
