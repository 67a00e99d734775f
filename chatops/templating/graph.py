"""The stage graph as Mermaid or Graphviz DOT text, with what each edge sets: ``lint-templates --graph``.

Nodes are stages (the start one marked, a form listing its fields, ``clear:`` shown); edges are transitions (their
condition and ``set:`` names), ``next`` and ``on_invalid``. Only text is produced: render it with any Mermaid or
Graphviz tool (GitHub shows Mermaid blocks in Markdown).
"""

from __future__ import annotations

from typing import Literal

from chatops.config.bot_schema import BotDefinition, Condition, Stage

GraphFormat = Literal["mermaid", "dot"]
_SHORT = 24


def stage_graph(bot: BotDefinition, fmt: GraphFormat = "mermaid") -> str:
    """The graph of ``bot`` in ``fmt``; stage names are quoted, labels escaped. Writes nothing."""
    nodes = [(name, _node_label(bot, name, stage)) for name, stage in bot.stages.items()]
    edges = [edge for name, stage in bot.stages.items() for edge in _edges(name, stage)]
    if fmt == "dot":
        lines = ["digraph stages {", "  rankdir=TB;", '  node [shape=box, fontname="sans-serif"];']
        lines += [f'  "{_dot(name)}" [label="{_dot(label)}"];' for name, label in nodes]
        lines += [f'  "{_dot(a)}" -> "{_dot(b)}" [label="{_dot(label)}"];' for a, b, label in edges]
        return "\n".join([*lines, "}"]) + "\n"
    ids = {name: f"s{index}" for index, (name, _) in enumerate(nodes)}
    lines = ["flowchart TD"]
    lines += [f'  {ids[name]}["{_mermaid(label)}"]' for name, label in nodes]
    for source, target, label in edges:
        arrow = f'-->|"{_mermaid(label)}"|' if label else "-->"
        lines.append(f"  {ids[source]} {arrow} {ids[target]}")
    return "\n".join(lines) + "\n"


def _node_label(bot: BotDefinition, name: str, stage: Stage) -> str:
    parts = [f"{name} (start)" if name == bot.bot.start else name]
    if stage.extract:
        parts.append("form: " + ", ".join(stage.extract))
    if stage.assign:
        parts.append("set " + ", ".join(stage.assign))
    if stage.clear is True:
        parts.append("clear all")
    elif stage.clear:
        parts.append("clear " + ", ".join(stage.clear))
    if stage.handoff:
        parts.append("handoff")
    return " · ".join(parts)


def _edges(name: str, stage: Stage) -> list[tuple[str, str, str]]:
    found = []
    for transition in stage.transitions:
        label = condition_label(transition.when)
        if transition.assign:
            label += " · set " + ", ".join(transition.assign)
        found.append((name, transition.to, label))
    if stage.next is not None:
        found.append((name, stage.next, "next"))
    if stage.on_invalid is not None:
        found.append((name, stage.on_invalid, "on_invalid"))
    return found


def condition_label(condition: Condition) -> str:
    """A short description of a transition's condition (``regex (qty, pizza)``, ``button yes``)."""
    kind = condition.kind
    if kind == "button":
        text = f"button {condition.button}"
    elif kind == "keywords":
        text = "keywords " + ", ".join(condition.keywords or ())
    elif kind == "regex":
        groups = condition.groups
        text = "regex" + (f" ({', '.join(groups)})" if groups else "")
    elif kind == "intent":
        text = f"intent {condition.intent}"
    elif kind == "if":
        text = f"if {condition.test}"
    else:
        text = "default" if kind == "default" else ""
    if condition.state is not None:
        text += (" · " if text else "") + "state " + ", ".join(condition.state)
    return text if len(text) <= 3 * _SHORT else text[: 3 * _SHORT - 1] + "…"


def _mermaid(text: str) -> str:
    return text.replace('"', "#quot;").replace("|", "#124;")


def _dot(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
