"""The one exception tree of chatops. The CLI and the HTTP layer catch only these.

::

    ChatopsError                      anything chatops reports to a user (message + optional hint)
    ├── ConfigError                   a setting is missing or malformed
    │   └── InstanceInUseError        another running process holds this process' CHATOPS_INSTANCE
    ├── BotDefinitionError            stages.yaml is invalid (carries file:line:col)
    ├── TemplateError                 a template fails to parse or render
    ├── ChannelError                  a webhook or Graph API problem
    │   ├── WebhookError              a webhook request is refused (carries the HTTP status to answer)
    │   │   └── SignatureError        X-Hub-Signature-256 missing (401) or wrong (403)
    │   └── GraphAPIError             the Graph API answered with an error (code, subcode, transient)
    ├── AIError                       the AI backend failed after its retries
    ├── ProviderError                 a variable provider failed or timed out
    ├── StateError                    a value cannot be kept in conversation memory (too many, too long, not JSON)
    ├── StorageError                  the database is unreachable or the schema is wrong (transient: retry later)
    │   └── SchemaOutOfDateError      the schema is behind the code's migrations
    └── UnstorableError               the database refused a value (permanent: retrying cannot help)

This module imports nothing of ours, so every layer may use it.
"""

from __future__ import annotations


class ChatopsError(Exception):
    """An error a user can act on: ``message`` says what and where, ``hint`` how to fix it."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(ChatopsError):
    """A setting is missing or malformed."""


class InstanceInUseError(ConfigError):
    """Another running process holds this process' instance name (``CHATOPS_INSTANCE``); it must not start."""


class BotDefinitionError(ChatopsError):
    """stages.yaml (or a template it names) is invalid; ``location`` is ``file:line:col`` when known."""

    def __init__(self, message: str, *, hint: str | None = None, location: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message, hint=hint)
        self.location = location


class TemplateError(ChatopsError):
    """A template failed to parse or render."""


class ChannelError(ChatopsError):
    """A webhook could not be accepted, or a message could not be sent."""


class WebhookError(ChannelError):
    """A webhook request is refused; ``status`` is the HTTP status to answer (400, 401, 403, 404, 413)."""

    def __init__(self, message: str, *, status: int = 400, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class SignatureError(WebhookError):
    """The webhook signature header is missing (401) or does not match the body (403)."""


class GraphAPIError(ChannelError):
    """The Graph API answered with an error.

    ``code``/``subcode`` are Meta's error codes (``None`` for transport failures), ``transient`` says whether a
    retry may succeed, ``status`` is the HTTP status (``None`` when no response arrived).
    """

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        subcode: int | None = None,
        status: int | None = None,
        transient: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.subcode = subcode
        self.status = status
        self.transient = transient
        self.retry_after = retry_after


class AIError(ChatopsError):
    """The AI backend failed (after its retries) or answered with something unusable."""


class ProviderError(ChatopsError):
    """A variable provider failed or timed out."""


class StateError(ChatopsError):
    """A value cannot be kept in a conversation's memory (``state``): too many names, too long, or not JSON data.

    The turn answers with the stage's ``on_error`` template and the state stays as it was.
    """


class StorageError(ChatopsError):
    """The database is unreachable, or its schema does not match the code."""


class SchemaOutOfDateError(StorageError):
    """The database schema is behind the migrations shipped with this version."""


class UnstorableError(ChatopsError):
    """The database refused a value: out of range, a character it cannot hold, a broken constraint.

    Unlike :class:`StorageError` this is permanent: the same write fails the same way however often it is tried,
    so a webhook answers 400 and a turn or send uses up its attempts instead of waiting for an outage to end.
    """
