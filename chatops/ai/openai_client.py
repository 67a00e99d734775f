"""The AIClient over the official OpenAI SDK (Chat Completions); any OpenAI-compatible server works.

Retries are the SDK's own, configured here and not re-implemented: it retries connection errors, timeouts,
408/409/429 and 5xx answers, ``max_retries`` times, waiting what ``Retry-After`` (or ``retry-after-ms``) says
when it is between 0 and 120 s, else an exponential backoff from 0.5 s (8 s at most) with jitter. A
``Retry-After`` above 120 s is not retried at all. ``timeout`` applies to each attempt, so the worst case of
one call is about ``(max_retries + 1) * timeout`` plus the waits.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Literal, cast
from urllib.parse import urlsplit

from chatops.ai.extract import build_extract_messages, extraction_response_format, parse_extraction
from chatops.ai.prompt import (
    ChatRequest,
    Message,
    allowed_intents,
    build_classify_messages,
    build_messages,
    intent_response_format,
    parse_intent,
)
from chatops.ai.protocol import ChatResult, ExtractResult, IntentResult, Usage
from chatops.config.memory_schema import ExtractField
from chatops.errors import AIError, ConfigError

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
    from openai.types.chat.completion_create_params import ResponseFormat

DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_RETRIES = 2

_KEY_LIKE = re.compile(r"\b(sk-[A-Za-z0-9_*.\-]{3})[A-Za-z0-9_*.\-]+")


class OpenAIClient:
    """Chat Completions through the official SDK, with explicit timeout and retries.

    ``base_url`` None means the SDK's own choice: ``OPENAI_BASE_URL``, else https://api.openai.com/v1.
    One instance is safe to share between worker threads (one connection pool). Raises ConfigError for an
    empty ``api_key``.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
    ) -> None:
        if not api_key:
            raise ConfigError("OPENAI_API_KEY is empty", hint="set OPENAI_API_KEY, or CHATOPS_AI=offline")
        # Imported here: the SDK takes ~0.3 s to import, which CLI commands without AI should not pay.
        import openai

        self._api_key = api_key
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries)
        self.timeout = timeout
        self.max_retries = max_retries
        self.base_url = str(self._client.base_url)

    @property
    def mode(self) -> Literal["openai"]:
        """Always ``openai`` (whichever compatible server ``base_url`` points at)."""
        return "openai"

    def reply(self, request: ChatRequest) -> ChatResult:
        """The model's reply to ``request``.

        Sends one Chat Completions request (plus the SDK's retries). Raises AIError after the retries, or when
        the answer has no text.
        """
        messages = build_messages(request)
        completion, latency_ms = self._create(request, messages, response_format=None)
        choice = completion.choices[0]
        # A refusal is still a polite sentence the user can read; only an empty answer is unusable.
        text = choice.message.content or choice.message.refusal
        if not text or not text.strip():
            raise AIError(
                f"{self._where()}: model {completion.model!r} returned an empty reply "
                f"(finish_reason {choice.finish_reason!r})",
                hint="check ai.max_tokens and the stage's prompt in stages.yaml",
            )
        return ChatResult(
            text=text,
            model=completion.model,
            usage=_usage(completion),
            latency_ms=latency_ms,
            request_messages=messages,
            finish_reason=choice.finish_reason,
        )

    def classify(self, request: ChatRequest, intents: Sequence[str]) -> IntentResult:
        """One of ``intents`` for the user's text, chosen through a strict JSON schema; None for anything else.

        Sends one request (none when ``intents`` is empty). Raises AIError when the backend fails.
        """
        messages = build_classify_messages(request, intents)
        if not allowed_intents(intents):
            return IntentResult(
                intent=None,
                raw=None,
                model=request.model,
                usage=Usage(),
                latency_ms=0.0,
                request_messages=[],
                finish_reason=None,
            )
        # The dict is exactly the SDK's ResponseFormatJSONSchema shape; prompt.py keeps it SDK-free.
        response_format = cast("ResponseFormat", intent_response_format(intents))
        completion, latency_ms = self._create(request, messages, response_format=response_format)
        choice = completion.choices[0]
        raw = choice.message.content
        return IntentResult(
            intent=parse_intent(raw, intents),
            raw=raw if raw is not None else choice.message.refusal,
            model=completion.model,
            usage=_usage(completion),
            latency_ms=latency_ms,
            request_messages=messages,
            finish_reason=choice.finish_reason,
        )

    def extract(
        self, request: ChatRequest, fields: Mapping[str, ExtractField], *, asking: str | None = None
    ) -> ExtractResult:
        """Values for ``fields`` through a strict JSON schema (structured outputs); unvalidated, nulls dropped.

        Sends one request. Raises AIError when the backend fails; an answer that is not the JSON object gives no
        values (the form asks again), a refusal is kept as the raw answer.
        """
        messages = build_extract_messages(request, fields, asking=asking)
        response_format = cast("ResponseFormat", extraction_response_format(fields))
        completion, latency_ms = self._create(request, messages, response_format=response_format)
        choice = completion.choices[0]
        raw = choice.message.content
        return ExtractResult(
            values=parse_extraction(raw, fields),
            raw=raw if raw is not None else choice.message.refusal,
            model=completion.model,
            usage=_usage(completion),
            latency_ms=latency_ms,
            request_messages=messages,
            finish_reason=choice.finish_reason,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _create(
        self, request: ChatRequest, messages: list[Message], *, response_format: ResponseFormat | None
    ) -> tuple[ChatCompletion, float]:
        import openai

        started = time.perf_counter()
        try:
            completion = self._client.chat.completions.create(
                model=request.model,
                messages=_sdk_messages(messages),
                temperature=request.temperature,
                # max_tokens, not max_completion_tokens: the one every OpenAI-compatible server understands.
                max_tokens=request.max_tokens,
                response_format=response_format if response_format is not None else openai.omit,
                timeout=request.timeout if request.timeout is not None else openai.NOT_GIVEN,
            )
        except openai.OpenAIError as exc:
            # `from None`: the SDK's exception text may quote the key (e.g. a 401 message); ours never does.
            raise self._error(exc, request) from None
        latency_ms = (time.perf_counter() - started) * 1000.0
        if not completion.choices:
            raise AIError(f"{self._where()}: model {completion.model!r} returned no choices")
        return completion, latency_ms

    def _where(self) -> str:
        parts = urlsplit(self.base_url)
        return f"OpenAI at {parts.hostname or self.base_url}{f':{parts.port}' if parts.port else ''}"

    def _error(self, exc: openai.OpenAIError, request: ChatRequest) -> AIError:
        import openai

        retries = f"after {self.max_retries} retr{'y' if self.max_retries == 1 else 'ies'}"
        if isinstance(exc, openai.APITimeoutError):
            timeout = request.timeout if request.timeout is not None else self.timeout
            return AIError(
                f"{self._where()}: no answer within {timeout:g} s per attempt ({retries})",
                hint="raise ai.timeout in stages.yaml, or check the server's health",
            )
        if isinstance(exc, openai.APIConnectionError):
            return AIError(
                f"{self._where()}: cannot connect ({retries})",
                hint="check OPENAI_BASE_URL and the network",
            )
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            code = exc.code or getattr(exc, "type", None)
            detail = _error_detail(exc.body)
            message = f"{self._where()}: HTTP {status}{f' {code}' if code else ''}"
            if detail:
                message += f": {detail}"
            retried = status in (408, 409, 429) or status >= 500
            if retried:
                message += f" ({retries})"
            return AIError(self._redact(message), hint=_status_hint(status, request.model))
        return AIError(
            self._redact(f"{self._where()}: unusable answer: {exc}"),
            hint="is OPENAI_BASE_URL an OpenAI-compatible Chat Completions server?",
        )

    def _redact(self, text: str) -> str:
        return _KEY_LIKE.sub(r"\1***", text.replace(self._api_key, "***"))


def _sdk_messages(messages: list[Message]) -> list[ChatCompletionMessageParam]:
    converted: list[ChatCompletionMessageParam] = []
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "system":
            converted.append({"role": "system", "content": content})
        elif role == "assistant":
            converted.append({"role": "assistant", "content": content})
        else:
            converted.append({"role": "user", "content": content})
    return converted


def _usage(completion: ChatCompletion) -> Usage:
    usage = completion.usage
    if usage is None:
        return Usage()
    return Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


def _error_detail(body: object) -> str:
    if isinstance(body, dict):
        message = body.get("message")
        return message.strip()[:300] if isinstance(message, str) else ""
    if isinstance(body, str):
        return body.strip()[:300]
    return ""


def _status_hint(status: int, model: str) -> str:
    if status in (401, 403):
        return "check OPENAI_API_KEY (and OPENAI_BASE_URL when using a compatible server)"
    if status == 404:
        return f"check the model name {model!r} (ai.model in stages.yaml) and OPENAI_BASE_URL"
    if status == 429:
        return "rate limited or out of quota: check the account's limits, or lower the load"
    if status >= 500:
        return "the AI server is failing; the stage's on_error reply answers meanwhile"
    return "the server refused the request; check ai.model, ai.temperature and ai.max_tokens in stages.yaml"
