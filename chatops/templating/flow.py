"""Which state names are surely set where: a data-flow pass over the stage graph, for ``lint-templates``.

For every stage it computes the names set on **every** path from ``start`` (a must-analysis: sets meet by
intersection), following the engine's rules (docs/stages.md, Conversation memory):

- a new or timed-out session waits at ``start`` with an empty state;
- a transition from S (where the conversation waits) into T keeps what was set at S, minus T's ``clear:``, plus
  the transition's ``set:`` and the names its ``state:`` condition proves defined;
- a stage that answers nothing matched (no ``default``) is entered again with what it waited with;
- when T answers with its reply/prompt, its required ``extract:`` fields and its ``set:`` are set too; then the
  conversation waits at ``next`` (or at T);
- a form still asking waits at T with what it was entered with; ``on_invalid`` is entered from there.

Sets are bit masks over the bot's names and a worklist revisits a stage only when what flows into it shrank, so
the pass is linear in the size of the graph for the usual, mostly acyclic bots. :meth:`StateFlow.path` finds one
example path along which a name is unset, for the warning.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from chatops.config.bot_schema import BotDefinition, Condition

#: When a stage reads the state: rendering its reply/prompt (``answer``), an ``ask:`` template (``ask``), its
#: ``on_error`` template (``error``), or running the providers its reply/prompt uses (``provider``: before the stage's
#: own ``set:``).
Moment = Literal["answer", "ask", "error", "provider"]
_DEFINED_TEST = re.compile(r"\bstate\.([A-Za-z]\w*)\s+is\s+defined\b")


@dataclass(frozen=True)
class _Edge:
    source: str  # where the conversation waits
    target: str  # the stage that answers
    sets: frozenset[str]  # what the transition sets (set:) or proves (state: defined)
    via: Literal["transition", "stay", "invalid"]


def proven(condition: Condition) -> frozenset[str]:
    """Names a condition proves set: its ``state:`` tests that require a value, and ``state.x is defined``
    conjuncts of an ``if:`` without ``or``/``not``."""
    names = {
        name
        for name, test in (condition.state or {}).items()
        if test.defined is True or (test.defined is None and "equals" in test.model_fields_set)
    }
    if condition.test is not None and not re.search(r"\b(or|not)\b", condition.test):
        names |= set(_DEFINED_TEST.findall(condition.test))
    return frozenset(names)


class StateFlow:
    """The state names surely set at each stage of ``bot`` (see the module docstring)."""

    def __init__(self, bot: BotDefinition) -> None:
        self.bot = bot
        self.names = sorted(bot.state_names)
        self._bit = {name: 1 << index for index, name in enumerate(self.names)}
        self._top = (1 << len(self.names)) - 1
        self.edges = list(self._edges())
        self._into: dict[str, list[_Edge]] = {name: [] for name in bot.stages}
        self._out: dict[str, list[_Edge]] = {name: [] for name in bot.stages}
        for edge in self.edges:
            self._into[edge.target].append(edge)
            self._out[edge.source].append(edge)
        self.waiting: dict[str, int] = dict.fromkeys(bot.stages, self._top)
        self.entered: dict[str, int] = dict.fromkeys(bot.stages, self._top)
        self._solve()

    # what callers ask ------------------------------------------------------------------------------------------

    def surely_set(self, stage: str, moment: Moment) -> frozenset[str]:
        """Names set on every path when ``stage`` renders its reply/prompt (``answer``), an ``ask:`` template
        (``ask``) or its ``on_error`` template (``error``: the state before the failed turn), or when the providers
        of its reply/prompt run (``provider``: the form complete, the stage's ``set:`` not yet run)."""
        if moment == "answer":
            mask = self._answering(stage)
        elif moment == "provider":
            mask = self._answering(stage, with_set=False)
        elif moment == "ask":
            mask = self.entered[stage]
        else:
            mask = self._top
            for edge in self._into[stage]:
                mask &= self.waiting[edge.source]
        return frozenset(name for name in self.names if mask & self._bit[name])

    def path(self, stage: str, name: str, moment: Moment) -> list[str] | None:
        """One path of stages from ``start`` reaching ``stage`` (at ``moment``) with ``name`` unset, or None."""
        start = self.bot.bot.start
        if start not in self.bot.stages:
            return None
        if moment == "error":  # on_error sees the state the conversation waited with before the turn
            goals = {("wait", edge.source, False) for edge in self._into[stage]}
        else:  # a provider runs before the stage's set: and sees what the stage was entered with (+ the form)
            goals = {("answer" if moment == "answer" else "enter", stage, False)}
        first = ("wait", start, False)
        parent: dict[tuple[str, str, bool], tuple[str, str, bool] | None] = {first: None}
        queue = deque([first])
        while queue:
            node = queue.popleft()
            if node in goals:
                path = self._stages_of(node, parent)
                return path if path[-1] == stage else [*path, stage]
            for following in self._steps(node, name):
                if following not in parent:
                    parent[following] = node
                    queue.append(following)
        return None

    # the pass --------------------------------------------------------------------------------------------------

    def _edges(self) -> Iterator[_Edge]:
        for name, stage in self.bot.stages.items():
            for transition in stage.transitions:
                if transition.to in self.bot.stages:
                    sets = frozenset(transition.assign) | proven(transition.when)
                    yield _Edge(name, transition.to, sets, "transition")
            if not any(t.when.default and t.when.state is None for t in stage.transitions):
                yield _Edge(name, name, frozenset(), "stay")
            if stage.extract and stage.on_invalid in self.bot.stages:
                yield _Edge(name, stage.on_invalid, frozenset(), "invalid")

    def _mask(self, names: frozenset[str] | set[str]) -> int:
        mask = 0
        for name in names:
            mask |= self._bit.get(name, 0)
        return mask

    def _cleared(self, stage: str) -> int:
        clear = self.bot.stages[stage].clear
        return self._top if clear is True else self._mask(set(clear or ()))

    def _answering(self, stage: str, *, with_set: bool = True) -> int:
        spec = self.bot.stages[stage]
        required = {name for name, field in spec.extract.items() if field.required}
        return self.entered[stage] | self._mask((set(spec.assign) if with_set else set()) | required)

    def _entry(self, edge: _Edge) -> int:
        if edge.via == "stay":
            return self.waiting[edge.source]
        if edge.via == "invalid":
            return self.entered[edge.source] & ~self._cleared(edge.target)
        return (self.waiting[edge.source] & ~self._cleared(edge.target)) | self._mask(edge.sets)

    def _solve(self) -> None:
        start = self.bot.bot.start
        if start in self.waiting:
            self.waiting[start] = 0  # a session (re)starts there with nothing set
        order = list(self.bot.stages)
        queue = deque(order)
        queued = set(order)
        rounds = 0
        while queue and rounds < 64 * (len(order) + 1) * (len(self.names) + 1):  # bounded: masks only shrink
            rounds += 1
            stage = queue.popleft()
            queued.discard(stage)
            entered = self._top
            for edge in self._into[stage]:
                entered &= self._entry(edge)
            changed: set[str] = set()
            if entered != self.entered[stage]:
                self.entered[stage] = entered
                changed |= {e.target for e in self._out[stage] if e.via == "invalid"}
            spec = self.bot.stages[stage]
            waits = [(spec.next if spec.next in self.bot.stages else stage, self._answering(stage))]
            if spec.extract:
                waits.append((stage, entered))
            for where, mask in waits:
                narrowed = self.waiting[where] & mask
                if narrowed != self.waiting[where]:
                    self.waiting[where] = narrowed
                    changed |= {e.target for e in self._out[where]}
            for target in changed:
                if target not in queued:
                    queued.add(target)
                    queue.append(target)

    # example paths ---------------------------------------------------------------------------------------------

    def _steps(self, node: tuple[str, str, bool], name: str) -> Iterator[tuple[str, str, bool]]:
        kind, at, is_set = node
        spec = self.bot.stages[at]
        if kind == "wait":
            for edge in self._out[at]:
                if edge.via == "invalid":
                    continue
                if edge.via == "stay":
                    yield ("enter", at, is_set)
                else:
                    cleared = spec is not None and self._cleared(edge.target) & self._bit.get(name, 0)
                    yield ("enter", edge.target, bool(is_set and not cleared) or name in edge.sets)
        elif kind == "enter":
            required = {n for n, field in spec.extract.items() if field.required}
            yield ("answer", at, is_set or name in spec.assign or name in required)
            if spec.extract:
                yield ("wait", at, is_set)
                if spec.on_invalid in self.bot.stages:
                    cleared = self._cleared(spec.on_invalid) & self._bit.get(name, 0)
                    yield ("enter", spec.on_invalid, is_set and not cleared)
        else:
            yield ("wait", spec.next if spec.next in self.bot.stages else at, is_set)

    @staticmethod
    def _stages_of(
        node: tuple[str, str, bool], parent: dict[tuple[str, str, bool], tuple[str, str, bool] | None]
    ) -> list[str]:
        stages: list[str] = []
        current: tuple[str, str, bool] | None = node
        while current is not None:
            if not stages or stages[-1] != current[1]:
                stages.append(current[1])
            current = parent[current]
        return stages[::-1]
