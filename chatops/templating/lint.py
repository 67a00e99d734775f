"""``lint-templates``: check a bot's templates and stage graph without rendering anything.

:func:`lint_bot` loads stages.yaml (its problems become findings), then for every stage checks that each variable
its templates read is provided there (built-ins, static variables, the stage's providers: see
``BotDefinition.template_variables``), following includes and imports; it also checks template syntax, filters and
tests, text that can grow without bound in a loop (:mod:`chatops.templating.growth`), provider option templates,
the ``whatsapp_template`` params, unused templates and the stage graph. Rule codes are stable and documented in
docs/lint-rules.md. Formatting for ``text``, ``json`` and ``github`` is here too, so the CLI only parses options
and prints.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jinja2 import Environment, nodes

from chatops.config.bot import BotDefinition, display_path, template_files_in, validate_bot
from chatops.config.bot_schema import FORM_ATTRIBUTES, PROVIDER_EXPRESSION_KINDS, did_you_mean
from chatops.templating.flow import Moment, StateFlow
from chatops.templating.graph import condition_label
from chatops.templating.growth import HINT as GROWTH_HINT
from chatops.templating.growth import unbounded_growth
from chatops.templating.sandbox import ChatopsSandbox, assignment_reads
from chatops.templating.variable_uses import TemplateAnalysis, VariableUse, analyse_template

Severity = Literal["error", "warning", "note"]
# Every namespace is a read-only mapping in the sandbox: `order.get("eta")` works whatever the provider provides.
_MAPPING_METHODS = frozenset({"get", "items", "keys", "values"})
Namespace = Mapping[str, frozenset[str] | None]
# Why a memory name is undefined in a template written in stages.yaml (provider inputs, whatsapp_template params).
_INPUT = {
    "match": "provider inputs read state, not match: keep the group with set: on the transition "
    "(set: {x: match.x}) and read state.x",
    "form": "provider inputs read state, not form: a form's valid fields are in state",
}
_CONDITION = {
    "match": "conditions are tried before a transition is chosen, so there is no match yet: test the text with "
    "when: {regex: …} and read match in that transition's set:",
}
_WINDOW = dict.fromkeys(
    ("state", "match", "form"), "whatsapp_template params see the built-ins and static variables only"
)

#: Every rule: code -> (severity, summary). docs/lint-rules.md explains each one.
RULES: Mapping[str, tuple[Severity, str]] = {
    "E100": ("error", "template syntax error"),
    "E101": ("error", "undefined variable"),
    "E102": ("error", "undefined attribute of a known variable"),
    "E103": ("error", "missing template file"),
    "E104": ("error", "unknown filter or test"),
    "W101": ("warning", "undefined variable or attribute, guarded by |default, is defined or if"),
    "W102": ("warning", "unused template"),
    "W103": ("warning", "text or list that can grow without bound inside a loop"),
    "E200": ("error", "invalid stages.yaml"),
    "E201": ("error", "transition or next to an unknown stage"),
    "E202": ("error", "missing or unknown start stage"),
    "E203": ("error", "stage with no reply and no way out"),
    "W201": ("warning", "unreachable stage"),
    "W202": ("warning", "transition on a button no stage offers"),
    "W203": ("warning", "start stage whose reply a new conversation never sees (its transitions end in default)"),
    "W301": ("warning", "state read where some path from start leaves it unset"),
    "N301": ("note", "state name set but never read"),
    "E302": ("error", "match group that no regex leading here has"),
    "W302": ("warning", "match group read where the stage can also answer without it"),
}


@dataclass(frozen=True)
class _Way:
    """One way a stage comes to answer, and the regex groups ``match`` then has."""

    description: str  # "after the transition from 'menu' (regex (qty, pizza))"
    groups: frozenset[str]


@dataclass(frozen=True)
class Finding:
    """One problem at ``file:line:col``. ``stages`` lists the stages it applies to (a template may serve several).

    ``message`` is what is wrong, ``context`` where it applies when it is not a stage (``provider order``),
    ``hint`` how to fix it; ``length`` is the width of the caret under the source line.
    """

    file: str
    line: int
    col: int
    code: str
    message: str
    stages: tuple[str, ...] = ()
    context: str | None = None
    hint: str | None = None
    source_line: str = ""
    length: int = 1

    @property
    def severity(self) -> Severity:
        """``error``, ``warning`` or ``note``, from the code's first letter."""
        return {"W": "warning", "N": "note"}.get(self.code[:1], "error")  # type: ignore[return-value]

    @property
    def stage(self) -> str | None:
        """The stage names, comma-separated (``None`` when the finding is not about a stage)."""
        return ", ".join(self.stages) or None

    @property
    def text(self) -> str:
        """The full message: what, in which stage or context, and the hint."""
        where = self.context
        if self.stages:
            where = ("stage " if len(self.stages) == 1 else "stages ") + ", ".join(self.stages)
        return self.message + (f" ({where})" if where else "") + (f" — {self.hint}" if self.hint else "")

    def to_json(self) -> dict[str, Any]:
        """The ``--format json`` object."""
        return {
            "file": self.file,
            "line": self.line,
            "col": self.col,
            "severity": self.severity,
            "code": self.code,
            "message": self.text,
            "stage": self.stage,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class LintReport:
    """Every finding, sorted by file and position, and what was checked."""

    findings: tuple[Finding, ...]
    templates: int
    stages: int

    @property
    def errors(self) -> int:
        """How many findings are errors."""
        return sum(finding.severity == "error" for finding in self.findings)

    @property
    def warnings(self) -> int:
        """How many findings are warnings."""
        return sum(finding.severity == "warning" for finding in self.findings)

    @property
    def notes(self) -> int:
        """How many findings are notes (never fail the run, even with ``--strict``)."""
        return sum(finding.severity == "note" for finding in self.findings)

    def exit_code(self, *, strict: bool = False) -> int:
        """1 when there are errors (or, with ``strict``, warnings), else 0."""
        return 1 if self.errors or (strict and self.warnings) else 0


def lint_bot(path: Path, *, templates_dir: Path | None = None, environment: Environment | None = None) -> LintReport:
    """Lint the bot defined by ``path`` (stages.yaml) and its templates (default: ``templates/`` beside it).

    ``environment`` is the Jinja environment templates run in (its filters, tests and globals count as defined);
    default: the sandbox templates are rendered in. Reads files only. Raises BotDefinitionError when stages.yaml
    cannot be read at all; every other problem is a finding.
    """
    env = environment if environment is not None else ChatopsSandbox()
    result = validate_bot(path, templates_dir=templates_dir)
    linter = _Linter(result.bot, env, path, templates_dir or path.parent / "templates")
    for problem in result.problems:
        loc = problem.location
        linter.add(loc.file, loc.line, loc.col, problem.code, problem.message, hint=problem.hint)
    if result.bot is not None:
        linter.run(result.bot)
    return linter.report()


@dataclass
class _Pending:
    stages: list[str] = field(default_factory=list)


class _Linter:
    def __init__(self, bot: BotDefinition | None, env: Environment, path: Path, folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.stages_file = display_path(path)
        self.stage_count = len(bot.stages) if bot is not None else 0
        self.stage_lines = _lines(path)
        self.analyses: dict[str, tuple[TemplateAnalysis, list[str]] | None] = {}
        self.pending: dict[tuple[Any, ...], _Pending] = {}
        self.flow: StateFlow | None = None
        self.state_reads: set[str] = set()
        self.provider_names: frozenset[str] = frozenset()
        self.bot: BotDefinition | None = None
        self.ways: dict[str, list[_Way]] = {}
        # provider -> the (stage, moment) pairs whose templates read it: where it runs, so what state it sees
        self.provider_runs: dict[str, set[tuple[str, Moment]]] = {}

    # collecting ----------------------------------------------------------------------------------------------------

    def add(
        self,
        file: str,
        line: int,
        col: int,
        code: str,
        message: str,
        *,
        stage: str | None = None,
        context: str | None = None,
        hint: str | None = None,
        length: int = 1,
        lines: list[str] | None = None,
    ) -> None:
        if lines is None and file == self.stages_file:
            lines = self.stage_lines
        source_line = lines[line - 1] if lines and 0 < line <= len(lines) else ""
        key = (file, line, col, code, message, context, hint, source_line, length)
        entry = self.pending.setdefault(key, _Pending())
        if stage is not None and stage not in entry.stages:
            entry.stages.append(stage)

    def report(self) -> LintReport:
        findings = [
            Finding(
                file=key[0],
                line=key[1],
                col=key[2],
                code=key[3],
                message=key[4],
                context=key[5],
                hint=key[6],
                source_line=key[7],
                length=key[8],
                stages=tuple(entry.stages),
            )
            for key, entry in self.pending.items()
        ]
        findings.sort(key=lambda f: (f.file != self.stages_file, f.file, f.line, f.col, f.code))
        templates = len([name for name, found in self.analyses.items() if found is not None])
        return LintReport(tuple(findings), templates, self.stage_count)

    # checking ------------------------------------------------------------------------------------------------------

    def run(self, bot: BotDefinition) -> None:
        self.flow = StateFlow(bot) if bot.bot.start in bot.stages else None
        self.bot = bot
        self.provider_names = frozenset(provider.name for provider in bot.providers)
        for name, stage in bot.stages.items():
            for provider in stage.providers or ():  # a stage's providers list runs them whatever its reply reads
                self.provider_runs.setdefault(provider, set()).add((name, "answer"))
            if stage.providers is None:  # else the engine runs the ones its set: reads too (engine.variables)
                for provider in assignment_reads(stage.assign) & self.provider_names:
                    self.provider_runs.setdefault(provider, set()).add((name, "answer"))
            for template in (stage.reply, stage.prompt):
                if template is not None:
                    self.template(template, bot.template_variables(name), stage=name, chain=())
            for template in stage.ask_templates:
                names = {**bot.template_variables(name), "form": FORM_ATTRIBUTES}
                self.template(template, names, stage=name, chain=(), moment="ask")
            if stage.on_error is not None:
                names = bot.template_variables(name, on_error=True)
                self.template(stage.on_error, names, stage=name, chain=(), moment="error")
        self.inline_templates(bot)
        self.memory_expressions(bot)
        self.graph(bot)
        self.unread_state(bot)
        for name in template_files_in(self.folder):
            if name not in self.analyses:
                file = display_path(self.folder / name)
                self.add(file, 1, 1, "W102", "template is not used by any stage", hint="remove it, or use it")
                self.analysis(name)  # counted as checked: a syntax error in it is still worth knowing

    def analysis(self, name: str) -> tuple[TemplateAnalysis, list[str]] | None:
        if name not in self.analyses:
            file = self.folder / name
            try:
                source = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                self.analyses[name] = None
                return None
            found = analyse_template(source, environment=self.env, name=name)
            lines = source.splitlines()
            self.analyses[name] = (found, lines)
            self.callables(display_path(file), found, lines)
            if found.tree is not None:
                self.growth(display_path(file), found.tree, lines)
        return self.analyses[name]

    def growth(self, file: str, tree: nodes.Template, lines: list[str]) -> None:
        for found in unbounded_growth(tree):
            if found.word is not None and found.word.isidentifier():
                col = _column_in(lines, found.line, found.word, 0)
            else:
                text = lines[found.line - 1] if 0 < found.line <= len(lines) else ""
                col = text.find(found.word) + 1 if found.word and found.word in text else 1
            length = len(found.word) if found.word else 1
            self.add(file, found.line, col, "W103", found.message, hint=GROWTH_HINT, lines=lines, length=length)

    def callables(self, file: str, found: TemplateAnalysis, lines: list[str]) -> None:
        if found.syntax_error is not None:
            line, message = found.syntax_error
            self.add(file, line, 1, "E100", f"syntax error: {message}", lines=lines)
        for use in found.callables:
            known = self.env.filters if use.kind == "filter" else self.env.tests
            if use.name not in known:
                hint = _closest(use.name, sorted(known))
                self.add(
                    file,
                    use.line,
                    use.col,
                    "E104",
                    f"unknown {use.kind} '{use.name}'",
                    hint=hint,
                    lines=lines,
                    length=len(use.name),
                )

    def template(
        self,
        name: str,
        names: Namespace,
        *,
        stage: str | None,
        chain: tuple[str, ...],
        context: str | None = None,
        moment: Moment = "answer",
    ) -> None:
        loaded = self.analysis(name)
        if loaded is None:
            return
        found, lines = loaded
        file = display_path(self.folder / name)
        for use in found.uses:
            self.variable(file, use, names, stage=stage, context=context, lines=lines, moment=moment)
        for ref in found.references:
            if self.analysis(ref.name) is None:
                self.add(
                    file,
                    ref.line,
                    ref.col,
                    "E103",
                    f"{ref.kind}d template '{ref.name}' does not exist",
                    hint=_closest(ref.name, template_files_in(self.folder)),
                    lines=lines,
                    length=len(ref.name),
                )
            elif ref.name not in chain:
                if ref.with_context:
                    self.template(ref.name, names, stage=stage, chain=(*chain, name), context=context, moment=moment)
                else:  # an import without context sees no variables at all
                    ctx = f"imported without context by {name}"
                    self.template(ref.name, {}, stage=None, chain=(*chain, name), context=ctx)

    def variable(
        self,
        file: str,
        use: VariableUse,
        names: Namespace,
        *,
        stage: str | None,
        context: str | None,
        lines: list[str] | None,
        line: int | None = None,
        cols: tuple[int, int] | None = None,
        moment: Moment = "answer",
        unavailable: Mapping[str, str] | None = None,
        match_ways: list[_Way] | None = None,
    ) -> None:
        """Check one use against ``names``; ``unavailable`` gives the hint for a name that is known elsewhere but
        not here (``match`` in a provider input). ``match`` attributes are checked against the regex groups of
        ``match_ways`` (default: the ways ``stage`` answers)."""
        line = line if line is not None else use.line
        col, attr_col = cols if cols is not None else (use.col, use.attr_col)
        no_context = context is not None and context.startswith("imported without context")
        if stage is not None and use.name in self.provider_names and use.name in names and moment != "error":
            self.provider_runs.setdefault(use.name, set()).add((stage, moment))
        if use.name not in names:
            hint = "add `with context` to the import" if no_context else _closest(use.name, names)
            if unavailable and use.name in unavailable:
                hint = unavailable[use.name]
            code = "W101" if use.guarded else "E101"
            if use.guarded and hint is None:
                hint = "it is guarded (|default, is defined or if), so it renders; declare it or drop the guard"
            message = f"undefined variable '{use.name}'"
            self.add(
                file,
                line,
                col,
                code,
                message,
                stage=stage,
                context=context,
                hint=hint,
                lines=lines,
                length=len(use.name),
            )
            return
        attributes = names[use.name]
        if use.name == "match" and use.attr is not None and use.attr not in _MAPPING_METHODS:
            ways = match_ways if match_ways is not None else self.ways_into(stage, moment)
            self.match_group(file, use, ways, stage=stage, context=context, line=line, col=attr_col, lines=lines)
            return
        if use.name == "state" and use.attr is not None:
            self.state_reads.add(use.attr)
            if attributes is not None and use.attr in attributes and stage is not None:
                self.state_flow(file, use, stage, moment, line, attr_col, lines)
        if use.attr is None or attributes is None or use.attr in attributes or use.attr in _MAPPING_METHODS:
            return
        close = _closest(use.attr, sorted(attributes))
        hint = close or f"'{use.name}' provides: " + ", ".join(sorted(attributes))
        code = "W101" if use.attr_guarded else "E102"
        message = f"undefined attribute '{use.attr}' of '{use.name}'"
        if use.name == "state":
            message = f"state.{use.attr} is set nowhere"
            hint = close or "no set:, extract: field or transition of stages.yaml sets it"
        self.add(
            file,
            line,
            attr_col,
            code,
            message,
            stage=stage,
            context=context,
            hint=hint,
            lines=lines,
            length=len(use.attr),
        )

    def state_flow(
        self, file: str, use: VariableUse, stage: str, moment: Moment, line: int, col: int, lines: list[str] | None
    ) -> None:
        """W301: ``state.x`` read unguarded where some path from start reaches ``stage`` without setting x."""
        if self.flow is None or use.attr is None or use.attr_guarded:
            return
        if use.attr in self.flow.surely_set(stage, moment):
            return
        path = self.flow.path(stage, use.attr, moment)
        where = {"answer": "", "ask": " (in its ask template)", "error": " (in its on_error template)"}[moment]
        self.add(
            file,
            line,
            col,
            "W301",
            f"state.{use.attr} may be unset here{where}",
            stage=stage,
            hint=(f"e.g. on the path {' → '.join(path)}; " if path else "")
            + f"set it on every path, or guard it: state.{use.attr} | default(…), is defined, or {{% if %}}",
            lines=lines,
            length=len(use.attr),
        )

    def ways_into(self, stage: str | None, moment: Moment) -> list[_Way]:
        """How ``stage`` comes to answer (a transition into it, answering again, on_invalid) with the groups
        ``match`` has each way; its ``on_error`` template sees none. Empty when nothing leads to it."""
        if stage is None or self.bot is None or stage not in self.bot.stages:
            return []
        if moment == "error":
            return [_Way("in its on_error template", frozenset())]
        if not self.ways:  # every stage's ways at once: one pass over the transitions
            self.ways = self.all_ways(self.bot)
        return self.ways.get(stage, [])

    @staticmethod
    def all_ways(bot: BotDefinition) -> dict[str, list[_Way]]:
        ways: dict[str, list[_Way]] = {name: [] for name in bot.stages}
        waiting = {bot.bot.start}
        for source, spec in bot.stages.items():
            for transition in spec.transitions:
                if transition.to in ways:
                    label = condition_label(transition.when)
                    groups = frozenset(transition.when.groups)
                    ways[transition.to].append(_Way(f"after the transition from '{source}' ({label})", groups))
            if spec.extract and spec.on_invalid in ways:
                ways[spec.on_invalid].append(_Way(f"as on_invalid of '{source}'", frozenset()))
            # where the conversation waits for the next message (and may answer again, with no match)
            waiting.add(spec.next if spec.next in bot.stages else source)
            if spec.extract:
                waiting.add(source)
        for name in waiting & set(ways):
            if not any(t.when.default and t.when.state is None for t in bot.stages[name].transitions):
                ways[name].append(_Way("again when no transition matches a message", frozenset()))
        return ways

    def match_group(
        self,
        file: str,
        use: VariableUse,
        ways: list[_Way],
        *,
        stage: str | None,
        context: str | None,
        line: int,
        col: int,
        lines: list[str] | None,
    ) -> None:
        """E302 / W302: ``match.x`` where no way into the stage (or only some) has a regex group ``x``."""
        attr = use.attr
        if not ways or attr is None:
            return
        lacking = [way for way in ways if attr not in way.groups]
        if not lacking:
            return
        groups = sorted({group for way in ways for group in way.groups})
        shown = f"groups here: {', '.join(groups)}" if groups else "no regex leads here, so match is empty"
        if len(lacking) == len(ways):
            if ways[0].description == "in its on_error template":
                reason, hint = "on_error templates see no match", f"read state.{attr} (set: keeps a group)"
            elif len(ways) == 1 and ways[0].description.startswith("this transition"):
                reason = f"{ways[0].description} has no regex group '{attr}'"
                hint = _closest(attr, groups) or (
                    f"its groups: {', '.join(groups)}" if groups else "it has no regex, so match is empty"
                )
            else:
                reason = f"no regex that leads here has a group '{attr}'"
                hint = _closest(attr, groups) or shown
            code = "W101" if use.attr_guarded else "E302"
            message = f"match.{attr} is never set: {reason}"
        elif use.attr_guarded:
            return
        else:
            code, way = "W302", lacking[0]
            message = f"match.{attr} may be undefined here"
            having = ", ".join(sorted(way.groups)) or "none"
            hint = (
                f"the stage also answers {way.description}, where match has no '{attr}' (its groups: {having}); "
                f"keep the group with set: on the transition and read state.{attr}, or guard it: "
                f"match.{attr} | default(…)"
            )
        self.add(file, line, col, code, message, stage=stage, context=context, hint=hint, lines=lines, length=len(attr))

    def memory_expressions(self, bot: BotDefinition) -> None:
        """``set:`` expressions and ``if:`` conditions of stages.yaml: their names, and the state they read."""
        base = bot.template_variables()
        conditions = {key: value for key, value in base.items() if key != "match"}
        for name, stage in bot.stages.items():
            ways = self.ways_into(name, "answer")
            for key, source in stage.assign.items():
                names = bot.template_variables(name)
                path: tuple[str | int, ...] = ("stages", name, "set", key)
                self.inline(bot, path, source, names, f"stage {name}", expression=True, match_ways=ways)
            for index, transition in enumerate(stage.transitions):
                path = ("stages", name, "transitions", index)
                own = [_Way("this transition", frozenset(transition.when.groups))]
                for key, source in transition.assign.items():
                    ctx = f"stage {name}"
                    self.inline(bot, (*path, "set", key), source, base, ctx, expression=True, match_ways=own)
                if transition.when.test is not None:
                    self.inline(
                        bot,
                        (*path, "when", "if"),
                        transition.when.test,
                        conditions,
                        f"stage {name}",
                        expression=True,
                        unavailable=_CONDITION,
                    )
                self.state_reads |= set(transition.when.state or ())

    def unread_state(self, bot: BotDefinition) -> None:
        """N301: a state name some ``set:`` or ``extract:`` writes but nothing reads."""
        for name, stage in bot.stages.items():
            written: list[tuple[tuple[str | int, ...], str]] = [(("stages", name, "set", k), k) for k in stage.assign]
            written += [(("stages", name, "extract", k), k) for k in stage.extract]
            for index, transition in enumerate(stage.transitions):
                written += [(("stages", name, "transitions", index, "set", k), k) for k in transition.assign]
            for path, key in written:
                if key in self.state_reads:
                    continue
                loc = bot.location(path, key=True)
                if loc is not None:
                    self.add(
                        loc.file,
                        loc.line,
                        loc.col,
                        "N301",
                        f"state.{key} is set but never read",
                        stage=name,
                        hint="no template, set: or condition reads it; remove it, or use it",
                        length=len(key),
                    )

    def inline_templates(self, bot: BotDefinition) -> None:
        """Provider options and whatsapp_template params: templates written in stages.yaml itself.

        Provider inputs see the built-ins, the static variables and ``state`` (``match`` only reaches them through a
        ``set:``); whatsapp_template params see the built-ins and the static variables.
        """
        names = {name: attrs for name, attrs in bot.template_variables().items() if name != "match"}
        for index, provider in enumerate(bot.providers):
            for option, value in provider.template_options.items():
                items = value.items() if isinstance(value, dict) else [(None, value)]
                for key, text in items:
                    path = ("providers", index, option) + ((key,) if key is not None else ())
                    expression = provider.use in PROVIDER_EXPRESSION_KINDS
                    ctx = f"provider {provider.name}"
                    self.inline(
                        bot, path, text, names, ctx, expression=expression, provider=provider.name, unavailable=_INPUT
                    )
        if bot.whatsapp_template is not None:
            window = {name: attrs for name, attrs in names.items() if name != "state"}
            for index, text in enumerate(bot.whatsapp_template.params):
                path = ("whatsapp_template", "params", index)
                self.inline(bot, path, text, window, "whatsapp_template", unavailable=_WINDOW)

    def provider_state_flow(self, provider: str, use: VariableUse, line: int, col: int) -> None:
        """W301 for a provider input: ``state.x`` read unguarded where some path reaches a stage that runs the
        provider without setting x (providers run before the stage's own ``set:``)."""
        if self.flow is None or use.attr is None or use.attr_guarded:
            return
        for stage, moment in sorted(self.provider_runs.get(provider, ())):
            when: Moment = "ask" if moment == "ask" else "provider"
            if use.attr in self.flow.surely_set(stage, when):
                continue
            path = self.flow.path(stage, use.attr, when)
            self.add(
                self.stages_file,
                line,
                col,
                "W301",
                f"state.{use.attr} may be unset when provider '{provider}' runs",
                stage=stage,
                hint=(f"e.g. on the path {' → '.join(path)}; " if path else "")
                + f"set it on every path to the stage (a stage's own set: runs after its providers), or guard it: "
                f"state.{use.attr} | default(…)",
                length=len(use.attr),
            )

    def inline(
        self,
        bot: BotDefinition,
        path: tuple[str | int, ...],
        text: Any,
        names: Namespace,
        ctx: str,
        *,
        expression: bool = False,
        provider: str | None = None,
        unavailable: Mapping[str, str] | None = None,
        match_ways: list[_Way] | None = None,
    ) -> None:
        if not isinstance(text, str):
            return
        if expression and "{{" not in text and "{%" not in text:
            text = "{{ " + text + " }}"  # an expression: same names, same line
        node = bot.source.node(path) if bot.source is not None else None
        if not isinstance(node, yaml.ScalarNode):
            return
        first = node.start_mark.line + 1 + (1 if node.style in ("|", ">") else 0)
        found = analyse_template(text, environment=self.env)
        if found.syntax_error is not None:
            line, message = found.syntax_error
            self.add(
                self.stages_file,
                first + line - 1,
                node.start_mark.column + 1,
                "E100",
                f"syntax error: {message}",
                context=ctx,
            )
        for use in found.uses:
            line = first + use.line - 1
            col = _column_in(self.stage_lines, line, use.name, node.start_mark.column)
            attr_col = _column_in(self.stage_lines, line, use.attr, col) if use.attr else col
            self.variable(
                self.stages_file,
                use,
                names,
                stage=None,
                context=ctx,
                lines=None,
                line=line,
                cols=(col, attr_col),
                unavailable=unavailable,
                match_ways=match_ways if match_ways is not None else [],
            )
            state_names = names.get("state")
            if provider is not None and use.name == "state" and state_names and use.attr in state_names:
                self.provider_state_flow(provider, use, line, attr_col)
        for call in found.callables:
            known = self.env.filters if call.kind == "filter" else self.env.tests
            if call.name not in known:
                line = first + call.line - 1
                col = _column_in(self.stage_lines, line, call.name, node.start_mark.column)
                self.add(
                    self.stages_file,
                    line,
                    col,
                    "E104",
                    f"unknown {call.kind} '{call.name}'",
                    context=ctx,
                    hint=_closest(call.name, sorted(known)),
                    length=len(call.name),
                )

    def graph(self, bot: BotDefinition) -> None:
        """Unreachable stages, dead ends, and button transitions nothing offers."""
        reached: set[str] = set()
        pending = [bot.bot.start] if bot.bot.start in bot.stages else []
        while pending:
            name = pending.pop()
            if name not in reached:
                reached.add(name)
                pending.extend(t for t in bot.stages[name].targets if t in bot.stages)
        offered = {button.id for stage in bot.stages.values() for button in stage.buttons}
        offered |= {
            choice for stage in bot.stages.values() for f in stage.extract.values() for choice in f.choices or ()
        }
        start = bot.stages.get(bot.bot.start)
        catch_all = start is not None and any(t.when.default and t.when.state is None for t in start.transitions)
        if start is not None and catch_all and (start.reply or start.prompt):
            loc = bot.location(("stages", bot.bot.start, "transitions"), key=True)
            assert loc is not None
            self.add(
                loc.file,
                loc.line,
                loc.col,
                "W203",
                f"start stage '{bot.bot.start}' never shows its reply to a new conversation: the first message goes "
                "through its transitions, and the default one always matches",
                stage=bot.bot.start,
                hint="let the start stage reply and move on with next: to a stage that has the transitions "
                "(docs/stages.md#the-start-stage)",
                length=len("transitions"),
            )
        for name, stage in bot.stages.items():
            loc = bot.location(("stages", name), key=True)
            assert loc is not None
            if bot.bot.start in bot.stages and name not in reached:
                self.add(
                    loc.file,
                    loc.line,
                    loc.col,
                    "W201",
                    f"stage '{name}' is unreachable from '{bot.bot.start}'",
                    hint="add a transition or next that leads to it, or remove it",
                    length=len(name),
                )
            if not (stage.reply or stage.prompt or stage.transitions or stage.next or stage.handoff):
                self.add(
                    loc.file,
                    loc.line,
                    loc.col,
                    "E203",
                    f"stage '{name}' has no reply and no way out",
                    hint="give it reply: or prompt:, and transitions: or next: (or handoff: true)",
                    length=len(name),
                )
            for index, transition in enumerate(stage.transitions):
                button = transition.when.button
                if button is not None and button not in offered:
                    at = bot.location(("stages", name, "transitions", index, "when", "button"))
                    assert at is not None
                    hint = _closest(button, sorted(offered)) or (
                        "no stage lists it under buttons; fine if it comes from a WhatsApp template or a Messenger menu"
                    )
                    self.add(
                        at.file,
                        at.line,
                        at.col,
                        "W202",
                        f"transition on button '{button}', which no stage offers",
                        stage=name,
                        hint=hint,
                        length=len(button),
                    )


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []


def _closest(name: str, choices: Iterable[str]) -> str | None:
    hint = did_you_mean(name, list(choices))
    return hint if hint.startswith("did you mean") else None


def _column_in(lines: list[str], line: int, word: str | None, start: int) -> int:
    """1-based column of ``word`` on ``line`` at or after 0-based ``start`` (``start + 1`` if not found)."""
    if word is None or not 0 < line <= len(lines):
        return start + 1
    match = re.compile(rf"(?<![\w]){re.escape(word)}\b").search(lines[line - 1], start)
    return match.start() + 1 if match else start + 1


# formatting ----------------------------------------------------------------------------------------------------------


def format_text(report: LintReport) -> str:
    """``file:line:col: error E101 message`` per finding, each with its source line and a caret, then a summary."""
    out: list[str] = []
    for finding in report.findings:
        out.append(f"{finding.file}:{finding.line}:{finding.col}: {finding.severity} {finding.code} {finding.text}")
        if finding.source_line:
            line = finding.source_line.rstrip("\n")
            prefix = "".join(char if char == "\t" else " " for char in line[: finding.col - 1])
            out.append(f"    {line}")
            out.append(f"    {prefix}{'^' * max(1, finding.length)}")
    out.append(_summary(report))
    return "\n".join(out) + "\n"


def _summary(report: LintReport) -> str:
    checked = f"{report.templates} template{'s' * (report.templates != 1)}, {report.stages} stage" + (
        "s" * (report.stages != 1)
    )
    if not report.findings:
        return f"No problems found ({checked})."
    errors = f"{report.errors} error{'s' * (report.errors != 1)}"
    warnings = f"{report.warnings} warning{'s' * (report.warnings != 1)}"
    notes = f", {report.notes} note{'s' * (report.notes != 1)}" if report.notes else ""
    return f"Found {errors} and {warnings}{notes} ({checked})."


def format_json(report: LintReport) -> str:
    """A JSON list of ``{file, line, col, severity, code, message, stage, hint}``."""
    return json.dumps([finding.to_json() for finding in report.findings], indent=2, ensure_ascii=False) + "\n"


def format_github(report: LintReport) -> str:
    """GitHub workflow commands: ``::error file=…,line=…,col=…,title=E101::message`` per finding."""
    out = []
    for finding in report.findings:
        props = ",".join(
            f"{key}={_escape(str(value), prop=True)}"
            for key, value in (
                ("file", finding.file),
                ("line", finding.line),
                ("col", finding.col),
                ("title", finding.code),
            )
        )
        level = "notice" if finding.severity == "note" else finding.severity  # GitHub's name for a note
        out.append(f"::{level} {props}::{_escape(finding.text)}")
    return "".join(line + "\n" for line in out)


def _escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text
