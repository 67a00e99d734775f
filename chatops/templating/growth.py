"""Lint rule W103: template code that can obviously build text or a list without bound, seen in the source alone.

The sandbox stops such a template when it renders (:mod:`chatops.templating.sandbox`: 100,000 characters or items
per value); this rule says so in CI, before a user's message makes it happen. "Obvious" means one of these inside a
``{% for %}`` loop, where one expression runs many times and its results can compound:

- a **repetition** ``*`` of a string or list literal (or a ``~`` concatenation) by a number that is not a constant:
  ``'-' * width``;
- a **width or count** that is not a constant: the methods ``ljust``, ``rjust``, ``center``, ``zfill``,
  ``expandtabs``, ``to_bytes``; the filters ``center``, ``indent``, ``wordwrap``; ``lipsum(n)``; a ``%`` format with
  a ``*`` width or precision (``'%*d' % (w, n)``) or a ``str.format`` string with a nested ``{…{w}}`` field, when an
  argument is not a constant;
- a ``{% set %}`` that builds a variable from **two copies of itself** (``ns.s ~ ns.s``, ``ns.l + ns.l``) or
  **multiplies** it (``ns.s * 2``): it doubles on every iteration.

Appending one piece per iteration (``ns.text ~ item``) is not flagged: it grows with the loop's length, which the
step budget bounds. Numbers are not flagged either (``price * qty``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from jinja2 import nodes

WIDTH_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs", "to_bytes"})
WIDTH_FILTERS = frozenset({"center", "indent", "wordwrap"})
_STAR_CONVERSION = re.compile(r"%[-#0 +]*(\*|\d*\.\*)")
_NESTED_FIELD = re.compile(r"\{[^{}]*\{")
HINT = "use a constant, or clamp the value first (e.g. [width, 40] | min)"


@dataclass(frozen=True)
class Growth:
    """One W103 finding: the template line, the word to point at on it, and what grows."""

    line: int
    word: str | None
    message: str


def unbounded_growth(tree: nodes.Template) -> list[Growth]:
    """Every obvious case (see the module docstring) in the parsed template ``tree``, in line order."""
    found: dict[int, Growth] = {}
    for loop in tree.find_all(nodes.For):
        for node in _inside(loop.body):
            growth = _check(node)
            if growth is not None:
                found.setdefault(id(node), growth)
    return sorted(found.values(), key=lambda growth: growth.line)


def _inside(body: list[nodes.Node]) -> Iterator[nodes.Node]:
    pending: list[nodes.Node] = list(body)
    while pending:
        node = pending.pop()
        yield node
        pending.extend(node.iter_child_nodes())


def _check(node: nodes.Node) -> Growth | None:
    if isinstance(node, nodes.Mul):
        for sequence, count in ((node.left, node.right), (node.right, node.left)):
            if _is_sequence(sequence) and not _constant(count):
                return Growth(node.lineno, "*", "repetition '*' by a number the template computes, inside a loop")
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        method = node.node.attr
        arguments = [*node.args, *(keyword.value for keyword in node.kwargs)]
        if method in WIDTH_METHODS and not all(_constant(argument) for argument in arguments):
            return Growth(node.lineno, method, f"'.{method}()' with a width the template computes, inside a loop")
        receiver = node.node.node
        if method in ("format", "format_map") and isinstance(receiver, nodes.Const):
            nested = isinstance(receiver.value, str) and _NESTED_FIELD.search(receiver.value)
            if nested and not all(_constant(argument) for argument in arguments):
                return Growth(node.lineno, method, "a nested '{…{width}}' format field the template computes")
    lipsum = isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "lipsum"
    if lipsum and isinstance(node, nodes.Call) and not all(_constant(argument) for argument in node.args):
        return Growth(node.lineno, "lipsum", "lipsum() with a size the template computes, inside a loop")
    if isinstance(node, nodes.Filter) and node.name in WIDTH_FILTERS and not _all_constant(node):
        return Growth(node.lineno, node.name, f"filter '{node.name}' with a width the template computes")
    if isinstance(node, nodes.Mod) and _star_width(node) and not _constant(node.right):
        return Growth(node.lineno, "%", "a '%*' format width the template computes, inside a loop")
    if isinstance(node, nodes.Assign):
        return _self_growth(node)
    return None


def _self_growth(node: nodes.Assign) -> Growth | None:
    # Only namespace attributes carry over between iterations ({% set x %} in a loop starts afresh each time).
    target = _path(node.target) if isinstance(node.target, nodes.NSRef) else None
    if target is None:
        return None
    copies = sum(1 for child in _inside([node.node]) if _path(child) == target)
    doubles = copies >= 2 and any(isinstance(c, nodes.Concat | nodes.Add) for c in _inside([node.node]))
    multiplies = any(
        isinstance(child, nodes.Mul) and target in (_path(child.left), _path(child.right))
        for child in _inside([node.node])
    )
    name = ".".join(target)
    if doubles:
        return Growth(node.lineno, target[-1], f"'{name}' is set to two copies of itself: it doubles in every loop")
    if multiplies:
        return Growth(node.lineno, "*", f"'{name}' is set to a multiple of itself: it grows in every loop")
    return None


def _path(node: nodes.Node) -> tuple[str, ...] | None:
    """``('ns', 's')`` for ``ns.s`` (read or assigned), ``('x',)`` for ``x``; None for anything else."""
    if isinstance(node, nodes.Name):
        return (node.name,)
    if isinstance(node, nodes.NSRef):
        return (node.name, node.attr)
    if isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
        return (node.node.name, node.attr)
    return None


def _is_sequence(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Const):
        return isinstance(node.value, str)
    return isinstance(node, nodes.List | nodes.Tuple | nodes.Concat)


def _star_width(node: nodes.Mod) -> bool:
    """Whether ``node`` is ``'…%*d…' % args``: a width or precision taken from the arguments."""
    left = node.left
    return isinstance(left, nodes.Const) and isinstance(left.value, str) and bool(_STAR_CONVERSION.search(left.value))


def _all_constant(node: nodes.Filter) -> bool:
    return all(_constant(argument) for argument in [*node.args, *(keyword.value for keyword in node.kwargs)])


def _constant(node: nodes.Expr) -> bool:
    try:
        node.as_const()
    except nodes.Impossible:
        return False
    return True
