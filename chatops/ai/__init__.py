"""AI: the AIClient protocol, prompt assembly, the OpenAI client and the offline responder.

    from chatops.ai import ChatRequest, make_ai_client

    ai = make_ai_client("offline")
    result = ai.reply(ChatRequest(system_prompt="You help Northwind's customers.", user_text="hi"))

See docs/ai.md.
"""

from chatops.ai.factory import OFFLINE_WARNING, make_ai_client, make_ai_client_from_settings, offline_warning
from chatops.ai.offline import OFFLINE_LABEL, OfflineResponder
from chatops.ai.openai_client import OpenAIClient
from chatops.ai.prompt import (
    NO_INTENT,
    ChatRequest,
    Message,
    build_classify_messages,
    build_messages,
    intent_response_format,
    parse_intent,
)
from chatops.ai.protocol import AIClient, ChatResult, IntentResult, Usage

__all__ = [
    "NO_INTENT",
    "OFFLINE_LABEL",
    "OFFLINE_WARNING",
    "AIClient",
    "ChatRequest",
    "ChatResult",
    "IntentResult",
    "Message",
    "OfflineResponder",
    "OpenAIClient",
    "Usage",
    "build_classify_messages",
    "build_messages",
    "intent_response_format",
    "make_ai_client",
    "make_ai_client_from_settings",
    "offline_warning",
    "parse_intent",
]
