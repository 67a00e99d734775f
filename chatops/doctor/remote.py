"""Checks over the network, each with a short timeout and no retry: the Graph API accepts each channel's token,
OpenAI knows the bot's models for this key, and a running server answers Meta's verify-token handshake.

The token check is the cheapest authenticated read of the Graph API: ``GET /{phone-number-id}`` (WhatsApp; the
first of ``CHATOPS_WHATSAPP_PHONE_NUMBER_IDS``, else ``GET /me``) and ``GET /me`` with the page token (Messenger).
Sends nothing; reads nothing back but ids.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import httpx

from chatops.config.settings import Settings, channel_credentials
from chatops.doctor import Check
from chatops.doctor.local import CHANNELS

_TOKEN_HINTS = {
    "whatsapp": "make a long-lived system-user token with whatsapp_business_messaging (docs/deployment.md)",
    "messenger": "make a page access token for the subscribed page (docs/deployment.md)",
}


def graph_checks(settings: Settings, *, timeout: float) -> Iterator[Check]:
    """One authenticated ``GET`` per channel with a send token."""
    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        for channel in CHANNELS:
            token = channel_credentials(settings, channel).send_token
            if not token:
                continue
            node = (
                settings.whatsapp_phone_number_ids[0]
                if channel == "whatsapp" and settings.whatsapp_phone_number_ids
                else "me"
            )
            yield _graph_check(http, settings.graph_api_url, channel, node, token)


def _graph_check(http: httpx.Client, base: str, channel: str, node: str, token: str) -> Check:
    name = f"{channel} token"
    try:
        response = http.get(f"{base}/{node}", params={"fields": "id"}, headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as exc:
        return Check(name, "fail", f"Graph API unreachable at {base}: {type(exc).__name__}", _reach_hint(base))
    data = _json(response)
    if response.status_code == 200 and "id" in data:
        return Check(name, "pass", f"accepted by the Graph API (GET /{node})")
    error: dict[str, Any] = data["error"] if isinstance(data.get("error"), dict) else {}
    code, message = error.get("code"), str(error.get("message", response.reason_phrase))[:200]
    if code == 190 or response.status_code == 401:
        return Check(name, "fail", f"refused: {message} (code {code})", _TOKEN_HINTS[channel])
    if code == 100 and node != "me":
        hint = "CHATOPS_WHATSAPP_PHONE_NUMBER_IDS must hold the ids from WhatsApp > API Setup, readable by this token"
        return Check(name, "fail", f"GET /{node}: {message} (code {code})", hint)
    return Check(
        name, "fail", f"GET /{node} answered {response.status_code}: {message} (code {code})", _TOKEN_HINTS[channel]
    )


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _reach_hint(base: str) -> str:
    return f"can this machine reach {base}? (proxy, firewall, DNS; CHATOPS_GRAPH_API_URL)"


def openai_checks(settings: Settings, *, timeout: float) -> Iterator[Check]:
    """``models.retrieve`` for every model the bot names, with the real SDK (no retry)."""
    if settings.ai_mode == "offline":
        yield Check("openai", "pass", "offline responder (no OPENAI_API_KEY): OpenAI is not used")
        return
    import openai

    from chatops.config.bot import load_bot
    from chatops.errors import ChatopsError

    try:
        bot = load_bot(settings.stages, templates_dir=settings.templates_dir)
    except ChatopsError:
        yield Check("openai", "skip", "the bot does not load (see templates): its models are unknown")
        return
    models = sorted({bot.ai_for(stage).model for stage in bot.stages})
    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else ""
    client = openai.OpenAI(api_key=key or "missing", base_url=settings.openai_base_url, timeout=timeout, max_retries=0)
    try:
        for model in models:
            yield _model_check(client, model)
    finally:
        client.close()


def _model_check(client: Any, model: str) -> Check:
    import openai

    name = f"openai {model}"
    try:
        client.models.retrieve(model)
    except openai.AuthenticationError:
        return Check(name, "fail", "OpenAI refused the API key (401)", "set OPENAI_API_KEY to a valid key")
    except openai.NotFoundError:
        return Check(
            name,
            "fail",
            f"model {model!r} is not available to this key",
            "fix ai.model in stages.yaml or the key's project",
        )
    except openai.APIConnectionError as exc:
        where = str(client.base_url).rstrip("/")
        return Check(
            name,
            "fail",
            f"OpenAI unreachable at {where}: {type(exc).__name__}",
            "proxy, firewall, DNS; OPENAI_BASE_URL",
        )
    except openai.APIStatusError as exc:
        return Check(name, "fail", f"OpenAI answered {exc.status_code}", "try again; see status.openai.com")
    return Check(name, "pass", "reachable; the model is available to this key")


def handshake_checks(settings: Settings, url: str, *, timeout: float) -> Iterator[Check]:
    """Meta's subscription ``GET`` on ``url``/webhooks/<channel> with the configured verify token and a fresh
    challenge, as Meta sends it when the callback URL is saved."""
    base = url.rstrip("/")
    tried = False
    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        for channel in CHANNELS:
            token = channel_credentials(settings, channel).verify_token
            if not token:
                continue
            tried = True
            yield _handshake(http, f"{base}/webhooks/{channel}", channel, token)
    if not tried:
        yield Check("webhook handshake", "skip", "no verify token is set: nothing to try")


def _handshake(http: httpx.Client, endpoint: str, channel: str, token: str) -> Check:
    name = f"{channel} handshake"
    challenge = secrets.token_hex(8)
    params = {"hub.mode": "subscribe", "hub.verify_token": token, "hub.challenge": challenge}
    try:
        response = http.get(endpoint, params=params)
    except httpx.HTTPError as exc:
        return Check(name, "fail", f"{endpoint} unreachable: {type(exc).__name__}", "is `chatops serve` running there?")
    if response.status_code == 200 and response.text == challenge:
        return Check(name, "pass", f"{endpoint} echoed the challenge")
    if response.status_code == 403:
        hint = f"the server there runs with another CHATOPS_{channel.upper()}_VERIFY_TOKEN (or none)"
        return Check(name, "fail", f"{endpoint} refused this verify token (403)", hint)
    return Check(
        name,
        "fail",
        f"{endpoint} answered {response.status_code} without the challenge",
        "is that chatops (and the reverse proxy passing /webhooks/ through)?",
    )
