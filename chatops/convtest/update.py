"""``--update``: rewrite exact-reply expectations (``reply:``) with what the bot now says, snapshot style.

Only the text of each rewritten value changes: the rest of the file (comments, order, quoting, blank lines) is
left byte for byte, so the change reads as a small diff in review. A new value is written as a JSON-style
double-quoted YAML string (or a flow list of them), which round-trips any text exactly.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any

from chatops.config.yaml_source import parse_yaml
from chatops.convtest.cases import Expectation, TestFile


def rewrite(test_file: TestFile, updates: Sequence[tuple[Expectation, Any]]) -> str:
    """The file's text with each expectation's value replaced; raises ValueError if the result does not parse."""
    text = test_file.source.text
    spans = []
    for expectation, value in updates:
        node = test_file.source.node(expectation.path)
        if node is None:
            continue
        end = node.end_mark.index
        while end > node.start_mark.index and text[end - 1] in " \n":  # a block scalar ends past its newline
            end -= 1
        spans.append((node.start_mark.index, end, _render(value)))
    for start, end, rendered in sorted(spans, reverse=True):
        text = text[:start] + rendered + text[end:]
    parse_yaml(text, file=test_file.display)  # a rewrite that breaks the file is a bug, never written
    return text


def diff(test_file: TestFile, new_text: str) -> str:
    """A unified diff of the rewrite, for the terminal."""
    lines = difflib.unified_diff(
        test_file.source.text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=f"a/{test_file.display}",
        tofile=f"b/{test_file.display}",
    )
    return "".join(lines)


def _render(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(item, ensure_ascii=False) for item in value) + "]"
    return json.dumps(value, ensure_ascii=False)
