"""YAML with source positions: every value and mapping key keeps the line:col where it was written.

PyYAML's composer gives a node tree with marks; we build the plain Python data from it ourselves so that each
value can be traced back to ``file:line:col`` by its path (``("stages", "triage", "reply")``). Raises
:class:`YamlSourceError` for YAML syntax errors and duplicate keys (which PyYAML would silently overwrite).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceLocation:
    """A 1-based position in a file; ``str()`` gives ``file:line:col``."""

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class YamlSourceError(Exception):
    """The text is not valid YAML, or a mapping repeats a key; carries the 1-based position."""

    def __init__(self, message: str, *, line: int, col: int, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.col = col
        self.hint = hint


@dataclass(frozen=True)
class YamlSource:
    """Parsed YAML ``data`` plus the node of each value and of each mapping key, by path."""

    file: str
    text: str
    data: Any
    nodes: dict[Path_, yaml.Node] = field(repr=False)
    key_nodes: dict[Path_, yaml.Node] = field(repr=False)

    def location(self, path: Path_, *, key: bool = False) -> SourceLocation:
        """Where the value (or, with ``key``, the mapping key) at ``path`` is written.

        A path that does not exist (a missing key, say) falls back to its nearest existing ancestor.
        """
        if key and path in self.key_nodes:
            return self._at(self.key_nodes[path])
        probe = path
        while probe and probe not in self.nodes:
            probe = probe[:-1]
        node = self.nodes.get(probe)
        return self._at(node) if node is not None else SourceLocation(self.file, 1, 1)

    def node(self, path: Path_) -> yaml.Node | None:
        """The YAML node of the value at ``path``, if it exists."""
        return self.nodes.get(path)

    def line_text(self, line: int) -> str:
        """Source line ``line`` (1-based), without its newline; empty past the end."""
        lines = self.text.splitlines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def _at(self, node: yaml.Node) -> SourceLocation:
        return SourceLocation(self.file, node.start_mark.line + 1, node.start_mark.column + 1)


# libyaml's parser (when PyYAML was built with it, as its wheels are) gives the same nodes and marks about 10x
# faster than the pure-Python one: a 200-stage stages.yaml took ~0.4 s of lint-templates' time.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(text: str, *, file: str) -> YamlSource:
    """Parse ``text`` (one YAML document) keeping every node's position.

    Raises YamlSourceError for a syntax error or a duplicate mapping key.
    """
    try:
        return _parse(text, file=file, loader=_Loader)
    except YamlSourceError:
        if _Loader is yaml.SafeLoader:
            raise
        # Only on an error: the pure-Python parser words syntax errors better ("expected ',' or '}', but got
        # '<stream end>'" rather than libyaml's "did not find expected ',' or '}'").
        return _parse(text, file=file, loader=yaml.SafeLoader)


def _parse(text: str, *, file: str, loader: type[yaml.SafeLoader]) -> YamlSource:
    parser = loader(text)
    try:
        root = parser.get_single_node()
        nodes: dict[Path_, yaml.Node] = {}
        key_nodes: dict[Path_, yaml.Node] = {}
        data = _build(parser, root, (), nodes, key_nodes) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        raise YamlSourceError(f"invalid YAML: {problem}", line=line, col=col) from None
    finally:
        parser.dispose()
    return YamlSource(file=file, text=text, data=data, nodes=nodes, key_nodes=key_nodes)


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: Path_,
    nodes: dict[Path_, yaml.Node],
    key_nodes: dict[Path_, yaml.Node],
) -> Any:
    nodes[path] = node
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merge keys into plain pairs
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                raise YamlSourceError("mapping keys must be plain text", line=mark.line + 1, col=mark.column + 1)
            # The key as written: YAML 1.1 would turn `on:`/`no:` into booleans and `404:` into a number.
            key = str(key_node.value)
            if key in result:
                mark = key_node.start_mark
                first = key_nodes[(*path, key)].start_mark
                raise YamlSourceError(
                    f"duplicate key '{key}'",
                    line=mark.line + 1,
                    col=mark.column + 1,
                    hint=f"'{key}' is already defined at line {first.line + 1}; remove one of them",
                )
            key_nodes[(*path, key)] = key_node
            result[key] = _build(loader, value_node, (*path, key), nodes, key_nodes)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, index), nodes, key_nodes) for index, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)
