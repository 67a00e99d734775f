"""Conversation memory during a turn: what ``set:``, ``clear:`` and state conditions do to ``conversations.state``.

The state is a JSON object of named values kept across the turns of a session (a session timeout starts with an
empty one). Templates read it as ``{{ state.qty }}`` and this turn's regex groups as ``{{ match.qty }}``; both are
read-only namespaces. Names starting with ``_`` are the engine's own (a form's progress) and templates never see
them. Everything stored passes :func:`storable`: JSON data only, text cleaned by :func:`chatops.text.clean_value`,
at most ``MAX_VALUE_CHARS`` per value and ``MAX_STATE_NAMES`` names, else a StateError says which name and where.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Mapping
from datetime import date, datetime, time
from typing import Any

from chatops.config.bot_schema import Condition
from chatops.config.memory_schema import INTERNAL_PREFIX, MAX_STATE_NAMES, MAX_VALUE_CHARS
from chatops.errors import StateError
from chatops.templating.sandbox import Expression, Namespace
from chatops.text import clean_value

_MAX_DEPTH = 8


def visible_values(state: Mapping[str, Any]) -> dict[str, Any]:
    """The names of ``state`` that templates and providers see (the engine's ``_`` names left out)."""
    return {k: v for k, v in state.items() if not k.startswith(INTERNAL_PREFIX)}


def visible(state: Mapping[str, Any]) -> Namespace:
    """The ``state`` namespace templates read (the engine's ``_`` names left out)."""
    return Namespace("state", visible_values(state))


def match_namespace(groups: Mapping[str, Any]) -> Namespace:
    """The ``match`` namespace: the named groups of the regex that chose this turn's transition."""
    return Namespace("match", groups)


def regex_groups(groups: Mapping[str, str | None]) -> dict[str, str | None]:
    """A regex match's named groups as ``match`` values: cleaned text, None for a group that did not take part."""
    return {name: clean_value(value) if value is not None else None for name, value in groups.items()}


@functools.lru_cache(maxsize=4096)
def _compiled(source: str, label: str) -> Expression:
    return Expression(source, label=label)


def evaluate_set(
    assign: Mapping[str, Any], variables: Mapping[str, Any], *, where: Callable[[str], str]
) -> dict[str, Any]:
    """The values of a ``set:`` mapping: each text is a Jinja expression evaluated in the sandbox with
    ``variables``; other YAML values are literals. Every value is made :func:`storable`.

    All expressions see the same ``variables`` (the state before this ``set:``). ``where(name)`` says where the
    name's expression is written (``stages.yaml:12:21``). Raises TemplateError when an expression fails (an
    undefined name, a sandbox limit) and StateError when its value cannot be kept.
    """
    values: dict[str, Any] = {}
    for name, source in assign.items():
        label = f"{where(name)}: set {name}"
        value = _compiled(source, label).evaluate(variables) if isinstance(source, str) else source
        values[name] = storable(value, where=label)
    return values


def apply(state: Mapping[str, Any], values: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """``state`` with ``values`` written in (``none`` is kept as null: the name stays defined, as lint assumes);
    raises StateError past the limits."""
    updated = {**state, **values}
    names = [name for name in updated if not name.startswith(INTERNAL_PREFIX)]
    if len(names) > MAX_STATE_NAMES:
        raise StateError(
            f"{where}: the conversation would keep {len(names)} names; at most {MAX_STATE_NAMES} fit",
            hint="clear: names a stage no longer needs, or keep one list instead of many names",
        )
    return updated


def cleared(state: Mapping[str, Any], clear: bool | tuple[str, ...]) -> dict[str, Any]:
    """``state`` without the names ``clear`` lists (every name with ``true``; the engine's own names stay)."""
    if clear is True:
        return {k: v for k, v in state.items() if k.startswith(INTERNAL_PREFIX)}
    if not clear:
        return dict(state)
    return {k: v for k, v in state.items() if k not in clear}


def storable(value: Any, *, where: str) -> Any:
    """``value`` as JSON data for ``conversations.state``: text cleaned, dates as ISO 8601 text, tuples as lists.

    Raises StateError for values with no JSON form (objects, NaN, infinity), nesting deeper than 8, or more than
    MAX_VALUE_CHARS characters of JSON.
    """
    data = _json_data(value, where=where, depth=0)
    size = len(json.dumps(data, ensure_ascii=False))
    if size > MAX_VALUE_CHARS:
        raise StateError(
            f"{where}: value is {size:,} characters as JSON; at most {MAX_VALUE_CHARS:,} are kept",
            hint="keep a short value (| truncate(200)), or an id to look the rest up with a provider",
        )
    return data


def _json_data(value: Any, *, where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise StateError(f"{where}: value nested deeper than {_MAX_DEPTH} levels", hint="keep flat values")
    if value is None or isinstance(value, bool | int | str):
        return clean_value(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise StateError(f"{where}: {value} cannot be kept (JSON has no NaN or infinity)")
        return value
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {clean_value(str(key)): _json_data(item, where=where, depth=depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_data(item, where=where, depth=depth + 1) for item in value]
    raise StateError(
        f"{where}: a {type(value).__name__} cannot be kept in state",
        hint="keep text, numbers, true/false, lists or mappings of them",
    )


def condition_holds(condition: Condition, state: Mapping[str, Any], variables: Mapping[str, Any]) -> bool:
    """Whether a ``state`` or ``if`` condition holds; ``if`` is a Jinja expression over the turn's variables.

    Raises TemplateError when the ``if`` expression fails (an undefined name: guard it with ``is defined``).
    """
    if condition.state is not None and not all(test.holds(dict(state), n) for n, test in condition.state.items()):
        return False
    if condition.test is not None:
        return bool(_compiled(condition.test, f"if {condition.test!r}").evaluate(variables))
    return condition.state is not None
