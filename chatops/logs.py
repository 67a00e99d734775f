"""The process's logging: one place decides the format, the levels, and what never reaches a log line.

:func:`configure_logging` is called once by every command (``chatops.cli.app.settings_from``). It

- logs our own loggers (``chatops.*``) at the configured level, in one line format;
- holds every other logger at WARNING whatever the level (the root logger's level), and names the libraries that
  narrate HTTP once more (httpx and httpcore, httpx2 and httpcore2 that the openai SDK uses, urllib3, openai,
  waitress) in case something lowered theirs: at INFO/DEBUG they log every request URL (a provider URL carries
  the customer's phone number, a query string may carry a key) and, for openai, the whole prompt;
- puts a :class:`RedactUrls` filter on every root handler: whatever a line still quotes, a URL in it loses its
  query string and the password of its user info, in the message and in a traceback alike;
- formats lines as text or, with ``--log-format json``, one JSON object per line (python-json-logger), both
  carrying the request id and the conversation id of the work in progress (:func:`log_context`): a webhook's
  request id (``X-Request-ID`` from nginx, or one made up: :mod:`chatops.web.request_ids`), the conversation a
  worker's turn or a sender's delivery is about.

Writes nothing itself; raises nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from chatops.config.settings import mask_url

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
# What a JSON line holds besides the fields a record carries in `extra` (request_id, conversation_id, ...).
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
_JSON_NAMES = {"asctime": "time", "levelname": "level", "name": "logger"}
CONTEXT_FIELDS = ("request_id", "conversation_id")

_context: ContextVar[dict[str, Any]] = ContextVar("chatops_log_context", default={})  # noqa: B039  # never mutated
LIBRARY_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2", "urllib3", "openai", "waitress")

# A URL inside free text: a scheme, then anything up to white space, a quote or an angle bracket.
_URL = re.compile(r"""[A-Za-z][A-Za-z0-9+.\-]*://[^\s"'<>]+""")


def redact_url(url: str) -> str:
    """``url`` without its query string (``?…`` stays, to say there was one) and with its password masked."""
    base, question, _query = url.partition("?")
    return mask_url(base) + ("?…" if question else "")


def redact(text: str) -> str:
    """``text`` with every URL in it passed through :func:`redact_url`."""
    if "://" not in text:  # the common case costs one substring search
        return text
    return _URL.sub(lambda match: redact_url(match.group(0)), text)


class RedactUrls(logging.Filter):
    """Rewrites a record's message (and its traceback text) with :func:`redact`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and not record.exc_text:  # rendered here once; Formatter.format reuses exc_text
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every log line of this thread (or task) inside the block carries ``fields`` (``request_id``,
    ``conversation_id``), on top of the fields already in force."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current_log_context() -> dict[str, Any]:
    """The fields :func:`log_context` put in force here (a copy)."""
    return dict(_context.get())


class AddContext(logging.Filter):
    """Puts the fields of :func:`log_context` on each record (a field given in ``extra`` wins); never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        return True


class TextFormatter(logging.Formatter):
    """:data:`FORMAT`, then `` [request_id=… conversation_id=…]`` for the context fields a record carries."""

    def __init__(self) -> None:
        super().__init__(FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None)]
        if not fields:
            return line
        first, newline, rest = line.partition("\n")  # after the message, before a traceback
        return f"{first} [{' '.join(fields)}]{newline}{rest}"


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line: time, level, logger, message, the context fields; a traceback as ``exc_info``,
    its URLs redacted like the message's (python-json-logger formats it anew rather than reusing ``exc_text``)."""

    def __init__(self) -> None:
        super().__init__(JSON_FIELDS, rename_fields=_JSON_NAMES, json_ensure_ascii=False)

    def formatException(self, ei: Any) -> str | list[str]:  # type: ignore[override]  # as python-json-logger
        text = super().formatException(ei)
        return redact(text) if isinstance(text, str) else [redact(line) for line in text]

    def formatStack(self, stack_info: str) -> str | list[str]:  # type: ignore[override]  # as python-json-logger
        text = super().formatStack(stack_info)
        return redact(text) if isinstance(text, str) else [redact(line) for line in text]


def configure_logging(level: str, log_format: str = "text") -> None:
    """Set up the root logger at ``level`` in ``log_format`` (see the module docstring); calling it again
    re-applies levels and the format."""
    library_level = max(logging.WARNING, logging.getLevelName(level))
    logging.basicConfig(level=library_level, format=FORMAT)
    logging.getLogger("chatops").setLevel(level)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactUrls) for existing in handler.filters):
            handler.addFilter(AddContext())
            handler.addFilter(RedactUrls())
        # basicConfig's stderr handler (or ours again); another's handler (pytest's capture) keeps its format.
        if type(handler) is logging.StreamHandler or isinstance(handler.formatter, TextFormatter | JsonLineFormatter):
            handler.setFormatter(JsonLineFormatter() if log_format == "json" else TextFormatter())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    if level != "DEBUG":  # Alembic narrates every step at INFO; `chatops migrate` prints the summary
        logging.getLogger("alembic").setLevel(logging.WARNING)
