"""The process's logging: one place decides the format, the levels, and what never reaches a log line.

:func:`configure_logging` is called once by every command (``chatops.cli.app.settings_from``). It

- logs our own loggers (``chatops.*``) at the configured level, in one line format;
- holds every other logger at WARNING whatever the level (the root logger's level), and names the libraries that
  narrate HTTP once more (httpx and httpcore, httpx2 and httpcore2 that the openai SDK uses, urllib3, openai,
  waitress) in case something lowered theirs: at INFO/DEBUG they log every request URL (a provider URL carries
  the customer's phone number, a query string may carry a key) and, for openai, the whole prompt;
- puts a :class:`RedactUrls` filter on every root handler: whatever a line still quotes, a URL in it loses its
  query string and the password of its user info, in the message and in a traceback alike.

Writes nothing itself; raises nothing.
"""

from __future__ import annotations

import logging
import re

from chatops.config.settings import mask_url

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
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


def configure_logging(level: str) -> None:
    """Set up the root logger at ``level`` (see the module docstring); calling it again only re-applies levels."""
    library_level = max(logging.WARNING, logging.getLevelName(level))
    logging.basicConfig(level=library_level, format=FORMAT)
    logging.getLogger("chatops").setLevel(level)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(existing, RedactUrls) for existing in handler.filters):
            handler.addFilter(RedactUrls())
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    if level != "DEBUG":  # Alembic narrates every step at INFO; `chatops migrate` prints the summary
        logging.getLogger("alembic").setLevel(logging.WARNING)
