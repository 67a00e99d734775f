"""Which variables a Jinja template reads from its context, found by walking the parsed template (no rendering).

:func:`analyse_template` parses the source with the sandbox environment and walks ``jinja2.nodes``, keeping track of
what the template defines itself (``set``, ``for`` targets and ``loop``, macros and their arguments, ``call``
blocks, ``with``, ``import``/``from … import``), so that only names the context must provide are reported. Each
use records the first attribute read from it (``order.status``, ``order["status"]``) and whether it is *guarded*:
under ``|default``, ``is defined``/``is undefined``, or inside an ``{% if %}`` / ``… if … else …`` that tests it.

Jinja gives each node a line, not a column. The column is found in the source line: the n-th whole-word occurrence
of the name (n = how many uses of it came before on that line) inside a ``{{ }}``/``{% %}`` tag; the attribute's
own position for an attribute use; column 1 when the text cannot be found (a name built by a string, say).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from jinja2 import Environment, TemplateSyntaxError, nodes
from jinja2.parser import Parser

_GUARD_FILTERS = frozenset({"default", "d"})
_GUARD_TESTS = frozenset({"defined", "undefined"})
_TAGS = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.DOTALL)
_STRINGS = re.compile(r"'[^'\n]*'|\"[^\"\n]*\"")


@dataclass(frozen=True)
class VariableUse:
    """A read of context variable ``name`` (and of its attribute ``attr``) at ``line:col``."""

    name: str
    attr: str | None
    line: int
    col: int
    attr_col: int
    guarded: bool
    attr_guarded: bool


@dataclass(frozen=True)
class TemplateReference:
    """An ``include``/``import``/``from … import``/``extends`` of another template by a literal name."""

    name: str
    kind: Literal["include", "import", "extends"]
    with_context: bool
    line: int
    col: int


@dataclass(frozen=True)
class CallableUse:
    """A filter (``|upper``) or test (``is even``) used at ``line:col``."""

    name: str
    kind: Literal["filter", "test"]
    line: int
    col: int


@dataclass(frozen=True)
class TemplateAnalysis:
    """What a template reads, references and calls; ``syntax_error`` = (line, message) when it does not parse."""

    uses: tuple[VariableUse, ...] = ()
    references: tuple[TemplateReference, ...] = ()
    callables: tuple[CallableUse, ...] = ()
    syntax_error: tuple[int, str] | None = None
    tree: nodes.Template | None = field(default=None, compare=False, repr=False)  # as written, for more checks


def analyse_template(source: str, *, environment: Environment, name: str | None = None) -> TemplateAnalysis:
    """Parse ``source`` and list the context variables it reads, the templates it references and its filters.

    Never raises for template problems: a syntax error is returned in ``syntax_error``.
    """
    try:
        # Jinja's parser itself, not environment.parse: the sandbox rewrites loops and `~` when it parses, and the
        # checks want the template as its author wrote it. Parsed once, for every check (parsing is most of lint).
        tree = Parser(environment, source, name).parse()
    except TemplateSyntaxError as exc:
        return TemplateAnalysis(syntax_error=(exc.lineno or 1, exc.message or "invalid syntax"))
    walker = _Walker(_Columns(source), set(environment.globals))
    walker.body(tree.body, _Scope(None), frozenset(), direct=False)
    return TemplateAnalysis(tuple(walker.uses), tuple(walker.references), tuple(walker.callables), tree=tree)


class _Scope:
    __slots__ = ("names", "parent")

    def __init__(self, parent: _Scope | None, names: Iterable[str] = ()) -> None:
        self.parent = parent
        self.names = set(names)

    def defines(self, name: str) -> bool:
        scope: _Scope | None = self
        while scope is not None:
            if name in scope.names:
                return True
            scope = scope.parent
        return False


class _Columns:
    """Finds the column of a name on a line, only inside tags, taking the n-th occurrence for the n-th use."""

    def __init__(self, source: str) -> None:
        self.lines = source.splitlines()
        self.starts = [0]
        for line in self.lines:
            self.starts.append(self.starts[-1] + len(line) + 1)
        self.tags = [(m.start(), m.end()) for m in _TAGS.finditer(source) if not m.group().startswith("{#")]
        self.tag_starts = [start for start, _ in self.tags]
        # String literals inside tags: a name there ("x" in default("x")) is text, not a variable.
        self.strings = [(m.start(), m.end()) for start, end in self.tags for m in _STRINGS.finditer(source, start, end)]
        self.string_starts = [start for start, _ in self.strings]
        self.seen: dict[tuple[int, str], int] = {}

    def _in_code(self, offset: int, *, strings: bool) -> bool:
        index = bisect.bisect_right(self.tag_starts, offset) - 1
        if index < 0 or offset >= self.tags[index][1]:
            return False
        index = bisect.bisect_right(self.string_starts, offset) - 1
        return strings or index < 0 or offset >= self.strings[index][1]

    def find(self, line: int, pattern: str, key: str, group: int = 0, *, strings: bool = False) -> int:
        if not 0 < line <= len(self.lines):
            return 1
        base = self.starts[line - 1]
        hits = [
            m for m in re.finditer(pattern, self.lines[line - 1]) if self._in_code(base + m.start(), strings=strings)
        ]
        if not hits:
            return 1
        count = self.seen.get((line, key), 0)
        self.seen[(line, key)] = count + 1
        return hits[min(count, len(hits) - 1)].start(group) + 1

    def name(self, line: int, name: str) -> int:
        return self.find(line, rf"(?<![\w.]){re.escape(name)}\b", f"name:{name}")

    def attr(self, line: int, name: str, attr: str) -> int:
        pattern = rf"(?<![\w.]){re.escape(name)}\s*(?:\.\s*|\[\s*['\"])({re.escape(attr)})\b"
        return self.find(line, pattern, f"attr:{name}.{attr}", 1)

    def word(self, line: int, text: str) -> int:
        return self.find(line, rf"(?<![\w.]){re.escape(text)}\b", f"word:{text}")

    def string(self, line: int, text: str) -> int:
        return self.find(line, rf"['\"]({re.escape(text)})['\"]", f"str:{text}", 1, strings=True)


def _guard_names(expr: nodes.Node) -> set[str]:
    """Names (``x``) and attributes (``x.y``) an expression tests, which then guard the branches it selects."""
    found: set[str] = set()
    for node in [expr, *expr.find_all((nodes.Name, nodes.Getattr, nodes.Getitem))]:
        if isinstance(node, nodes.Name) and node.ctx == "load":
            found.add(node.name)
        elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name):
            found.add(f"{node.node.name}.{node.attr}")
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            found.add(f"{node.node.name}.{node.arg.value}")
    return found


def _target_names(target: nodes.Node) -> list[str]:
    if isinstance(target, nodes.Name):
        return [target.name]
    if isinstance(target, nodes.Tuple | nodes.List):
        return [name for item in target.items for name in _target_names(item)]
    return []


class _Walker:
    def __init__(self, columns: _Columns, globals_: set[str]) -> None:
        self.columns = columns
        self.globals = globals_
        self.uses: list[VariableUse] = []
        self.references: list[TemplateReference] = []
        self.callables: list[CallableUse] = []

    # statements ------------------------------------------------------------------------------------------------

    def body(self, body: Iterable[nodes.Node], scope: _Scope, guards: frozenset[str], *, direct: bool) -> None:
        body = list(body)
        # Macros can call macros defined later in the same body: they are looked up when called.
        scope.names.update(node.name for node in body if isinstance(node, nodes.Macro))
        for node in body:
            self.node(node, scope, guards, direct=direct)

    def node(self, node: nodes.Node, scope: _Scope, guards: frozenset[str], *, direct: bool) -> None:
        if isinstance(node, nodes.Name):
            if node.ctx == "load":
                self.use(node.name, None, node.lineno, scope, guards, direct=direct)
            else:  # a store or parameter: it takes up an occurrence of the name on its line
                self.columns.name(node.lineno, node.name)
        elif isinstance(node, nodes.Getattr) and isinstance(node.node, nodes.Name) and node.node.ctx == "load":
            self.use(node.node.name, node.attr, node.lineno, scope, guards, direct=direct)
        elif (
            isinstance(node, nodes.Getitem)
            and isinstance(node.node, nodes.Name)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            self.use(node.node.name, node.arg.value, node.lineno, scope, guards, direct=direct)
        elif isinstance(node, nodes.Filter):
            if node.node is not None:
                self.node(node.node, scope, guards, direct=direct or node.name in _GUARD_FILTERS)
            self.callable(node.name, "filter", node.lineno)
            self.children(node, scope, guards, direct=direct, skip=(node.node,))
        elif isinstance(node, nodes.Test):
            self.node(node.node, scope, guards, direct=direct or node.name in _GUARD_TESTS)
            self.callable(node.name, "test", node.lineno)
            self.children(node, scope, guards, direct=direct, skip=(node.node,))
        elif isinstance(node, nodes.If):
            self.node(node.test, scope, guards, direct=True)
            inner = guards | _guard_names(node.test)
            self.body(node.body, scope, inner, direct=direct)
            for branch in node.elif_:
                self.node(branch, scope, inner, direct=direct)
            self.body(node.else_, scope, inner, direct=direct)
        elif isinstance(node, nodes.CondExpr):
            self.node(node.test, scope, guards, direct=True)
            inner = guards | _guard_names(node.test)
            self.node(node.expr1, scope, inner, direct=direct)
            if node.expr2 is not None:
                self.node(node.expr2, scope, inner, direct=direct)
        elif isinstance(node, nodes.And):
            self.node(node.left, scope, guards, direct=direct)
            self.node(node.right, scope, guards | _guard_names(node.left), direct=direct)
        elif isinstance(node, nodes.Assign):
            self.node(node.node, scope, guards, direct=direct)
            self.assign(node.target, scope, guards, direct=direct)
        elif isinstance(node, nodes.AssignBlock):
            self.body(node.body, _Scope(scope), guards, direct=direct)
            if node.filter is not None:
                self.node(node.filter, scope, guards, direct=direct)
            self.assign(node.target, scope, guards, direct=direct)
        elif isinstance(node, nodes.For):
            self.node(node.target, scope, guards, direct=direct)
            self.node(node.iter, scope, guards, direct=direct)
            inner_scope = _Scope(scope, [*_target_names(node.target), "loop"])
            if node.test is not None:
                self.node(node.test, inner_scope, guards, direct=direct)
            self.body(node.body, inner_scope, guards, direct=direct)
            self.body(node.else_, _Scope(scope), guards, direct=direct)
        elif isinstance(node, nodes.Macro):
            scope.names.add(node.name)
            for default in node.defaults:
                self.node(default, scope, guards, direct=direct)
            params = [arg.name for arg in node.args]
            self.body(node.body, _Scope(scope, [*params, "varargs", "kwargs", "caller"]), guards, direct=direct)
        elif isinstance(node, nodes.CallBlock):
            self.node(node.call, scope, guards, direct=direct)
            for default in node.defaults:
                self.node(default, scope, guards, direct=direct)
            params = [arg.name for arg in node.args]
            self.body(node.body, _Scope(scope, [*params, "varargs", "kwargs", "caller"]), guards, direct=direct)
        elif isinstance(node, nodes.With):
            for value in node.values:
                self.node(value, scope, guards, direct=direct)
            names = [name for target in node.targets for name in _target_names(target)]
            for target in node.targets:
                self.node(target, scope, guards, direct=direct)
            self.body(node.body, _Scope(scope, names), guards, direct=direct)
        elif isinstance(node, nodes.Block):
            self.body(node.body, _Scope(scope, ["super", "self"]), guards, direct=direct)
        elif isinstance(node, nodes.Scope | nodes.ScopedEvalContextModifier):
            self.body(node.body, _Scope(scope), guards, direct=direct)
        elif isinstance(node, nodes.Include):
            self.reference(node.template, "include", node.with_context, node.lineno, scope, guards)
        elif isinstance(node, nodes.Extends):
            self.reference(node.template, "extends", True, node.lineno, scope, guards)
        elif isinstance(node, nodes.Import):
            self.reference(node.template, "import", node.with_context, node.lineno, scope, guards)
            scope.names.add(node.target)
        elif isinstance(node, nodes.FromImport):
            self.reference(node.template, "import", node.with_context, node.lineno, scope, guards)
            scope.names.update(item if isinstance(item, str) else item[1] for item in node.names)
        else:
            self.children(node, scope, guards, direct=direct)

    def children(
        self,
        node: nodes.Node,
        scope: _Scope,
        guards: frozenset[str],
        *,
        direct: bool,
        skip: tuple[nodes.Node | None, ...] = (),
    ) -> None:
        for child in node.iter_child_nodes():
            if not any(child is skipped for skipped in skip):
                self.node(child, scope, guards, direct=direct)

    def assign(self, target: nodes.Node, scope: _Scope, guards: frozenset[str], *, direct: bool) -> None:
        if isinstance(target, nodes.NSRef):  # {% set ns.count = … %} reads `ns`
            self.use(target.name, None, target.lineno, scope, guards, direct=direct)
        else:
            for name in _target_names(target):
                self.columns.name(target.lineno, name)  # takes up its occurrence on the line
                scope.names.add(name)

    # records ---------------------------------------------------------------------------------------------------

    def use(
        self,
        name: str,
        attr: str | None,
        line: int,
        scope: _Scope,
        guards: frozenset[str],
        *,
        direct: bool,
    ) -> None:
        col = self.columns.name(line, name)
        if scope.defines(name) or name in self.globals:
            return
        attr_col = self.columns.attr(line, name, attr) if attr is not None else col
        if attr is not None and attr_col == 1:
            attr_col = col
        self.uses.append(
            VariableUse(
                name=name,
                attr=attr,
                line=line,
                col=col,
                attr_col=attr_col,
                guarded=direct or name in guards,
                attr_guarded=direct or (attr is not None and f"{name}.{attr}" in guards),
            )
        )

    def callable(self, name: str, kind: Literal["filter", "test"], line: int) -> None:
        self.callables.append(CallableUse(name, kind, line, self.columns.word(line, name)))

    def reference(
        self,
        template: nodes.Expr,
        kind: Literal["include", "import", "extends"],
        with_context: bool,
        line: int,
        scope: _Scope,
        guards: frozenset[str],
    ) -> None:
        if isinstance(template, nodes.Const) and isinstance(template.value, str):
            col = self.columns.string(line, template.value)
            self.references.append(TemplateReference(template.value, kind, with_context, line, col))
        else:  # a computed name: its parts are ordinary reads; the target cannot be checked
            self.node(template, scope, guards, direct=False)
