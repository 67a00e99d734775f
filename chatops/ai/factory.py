"""Choose the AI backend for a process: OpenAI (or a compatible server) or the offline responder."""

from __future__ import annotations

from typing import Literal

from chatops.ai.offline import OfflineResponder
from chatops.ai.openai_client import DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT, OpenAIClient
from chatops.ai.protocol import AIClient
from chatops.config.settings import Settings
from chatops.errors import ConfigError

OFFLINE_WARNING = "AI is offline: replies are labelled; set OPENAI_API_KEY to use OpenAI"
"""The start-up warning ``serve``, ``worker`` and ``simulate`` show when the offline responder is in use."""


def make_ai_client(
    mode: Literal["openai", "offline"],
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> AIClient:
    """The AIClient for ``mode``: an OpenAIClient (``timeout`` per attempt, ``max_retries``), or offline.

    Raises ConfigError when ``mode`` is ``openai`` without an API key, or ``mode`` is unknown.
    """
    if mode == "offline":
        return OfflineResponder()
    if mode == "openai":
        if not api_key:
            raise ConfigError(
                "CHATOPS_AI=openai needs OPENAI_API_KEY",
                hint="set OPENAI_API_KEY, or CHATOPS_AI=offline for the labelled local responder",
            )
        return OpenAIClient(api_key, base_url, timeout=timeout, max_retries=max_retries)
    raise ConfigError(f"CHATOPS_AI: unknown mode {mode!r}", hint="use 'openai' or 'offline'")


def make_ai_client_from_settings(settings: Settings, *, timeout: float = DEFAULT_TIMEOUT) -> AIClient:
    """The AIClient the settings ask for (``CHATOPS_AI``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).

    Raises ConfigError as make_ai_client does.
    """
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return make_ai_client(settings.ai_mode, api_key=key, base_url=settings.openai_base_url, timeout=timeout)


def offline_warning(client: AIClient) -> str | None:
    """The start-up warning to show for ``client`` (OFFLINE_WARNING when it is offline), else None."""
    return OFFLINE_WARNING if client.mode == "offline" else None
