"""Console output for the CLI: colours on a terminal, plain text when piped, errors on stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def error(message: str, *, hint: str | None = None) -> None:
    """Print ``Error: …`` (and ``Hint: …``) on stderr."""
    stderr.print(Text.assemble(("Error: ", "bold red"), message))
    if hint:
        stderr.print(Text.assemble(("Hint: ", "yellow"), hint))


def warning(message: str) -> None:
    """Print ``Warning: …`` on stderr."""
    stderr.print(Text.assemble(("Warning: ", "bold yellow"), message))


def info(message: str, style: str | None = None) -> None:
    """Print a line on stdout; never interpreted as markup."""
    stdout.print(Text(message, style=style or ""))


def print_json(value: Any) -> None:
    """Print ``value`` as JSON on stdout (no colour, so it pipes into jq)."""
    stdout.file.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")
