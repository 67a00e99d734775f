"""Options that take one word out of a few (``--format``, ``--channel``, ``--log-level``).

Typer turns a bad Enum or Literal value into pydantic's text ("Value error, 'xml' is not one of …"); these parsers
answer in the CLI's own words instead, and accept any letter case.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from enum import Enum
from typing import Any, TypeVar

import typer

T = TypeVar("T")


def _word(choice: object) -> str:
    return str(choice.value) if isinstance(choice, Enum) else str(choice)


def choice_parser(choices: Iterable[T]) -> Callable[[Any], T]:
    """A ``parser=`` for ``typer.Option`` that maps a word (any case) to one of ``choices``.

    Raises BadParameter (exit 2) naming every choice: ``'xml' is not one of 'text', 'json', 'github'.``
    """
    options = list(choices)
    by_word = {_word(choice).casefold(): choice for choice in options}
    listed = ", ".join(repr(_word(choice)) for choice in options)

    def parse(value: Any) -> T:
        found = by_word.get(_word(value).strip().casefold())
        if found is None:
            raise typer.BadParameter(f"{_word(value)!r} is not one of {listed}.")
        return found

    return parse


def choice_metavar(choices: Iterable[object]) -> str:
    """``[text|json|github]``, the way help shows the choices."""
    return "[" + "|".join(_word(choice) for choice in choices) + "]"


ROLES = ("viewer", "operator", "admin")  # chatops.web.auth.Role's values, without importing the web layer here
