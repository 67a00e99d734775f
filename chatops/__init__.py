"""chatops: run a chatbot business on WhatsApp and Facebook Messenger.

The package is a library first; ``chatops serve`` and the operations CLI are thin adapters over it.
Heavy dependencies (SQLAlchemy, Flask, OpenAI) are imported by the modules that need them, never here,
so that ``chatops --help`` stays fast.
"""

from chatops.errors import (
    AIError,
    BotDefinitionError,
    ChannelError,
    ChatopsError,
    ConfigError,
    StorageError,
    TemplateError,
)

__version__ = "0.1.0"

__all__ = [
    "AIError",
    "BotDefinitionError",
    "ChannelError",
    "ChatopsError",
    "ConfigError",
    "StorageError",
    "TemplateError",
    "__version__",
]
