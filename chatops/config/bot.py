"""The bot definition: load stages.yaml into a checked, frozen :class:`BotDefinition`.

:func:`load_bot` reads stages.yaml, checks its schema (``bot_schema``) and every reference in it (stages, providers,
template files, lookup files), and computes the definition's version. A problem raises BotDefinitionError located
at ``stages.yaml:line:col`` of the offending YAML node, with a hint. :func:`validate_bot` returns every problem
instead (``lint-templates`` reports them all). docs/stages.md is the reference for every key.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from chatops.config.bot_schema import (
    BUILTIN_PROVIDER_KINDS,
    BUILTIN_VARIABLES,
    MAX_BUTTONS,
    MEMORY_VARIABLES,
    PROVIDER_OPTIONS,
    PROVIDER_TEMPLATE_OPTIONS,
    TEMPLATE_INCLUDE,
    AIOverrides,
    AISettings,
    BotDefinition,
    BotSettings,
    Button,
    Condition,
    ProviderSpec,
    Stage,
    Transition,
    WhatsAppTemplate,
    did_you_mean,
)
from chatops.config.schedule import BusinessHours, InvalidValue
from chatops.config.yaml_source import SourceLocation, YamlSource, YamlSourceError, parse_yaml
from chatops.errors import BotDefinitionError

__all__ = [
    "BUILTIN_PROVIDER_KINDS",
    "BUILTIN_VARIABLES",
    "MAX_BUTTONS",
    "MEMORY_VARIABLES",
    "PROVIDER_OPTIONS",
    "PROVIDER_TEMPLATE_OPTIONS",
    "AIOverrides",
    "AISettings",
    "BotDefinition",
    "BotProblem",
    "BotSettings",
    "BotValidation",
    "BusinessHours",
    "Button",
    "Condition",
    "ProviderSpec",
    "SourceLocation",
    "Stage",
    "Transition",
    "WhatsAppTemplate",
    "display_path",
    "load_bot",
    "validate_bot",
]

TEMPLATE_SUFFIXES = (".j2", ".jinja", ".jinja2")
_TYPE_MESSAGES = {
    "dict_type": "expected a mapping (key: value lines)",
    "model_type": "expected a mapping (key: value lines)",
    "model_attributes_type": "expected a mapping (key: value lines)",
    "list_type": "expected a list",
    "tuple_type": "expected a list",
    "string_type": "expected text",
}


@dataclass(frozen=True)
class BotProblem:
    """One problem in stages.yaml: a stable ``code`` (docs/lint-rules.md), where, what, and how to fix it."""

    code: str
    message: str
    location: SourceLocation
    hint: str | None = None

    def error(self) -> BotDefinitionError:
        """This problem as the exception :func:`load_bot` raises."""
        return BotDefinitionError(self.message, hint=self.hint, location=str(self.location))


@dataclass(frozen=True)
class BotValidation:
    """What :func:`validate_bot` found: the definition (``None`` if its schema is wrong) and every problem."""

    bot: BotDefinition | None
    problems: tuple[BotProblem, ...]


def load_bot(path: Path, *, templates_dir: Path | None = None) -> BotDefinition:
    """Read and check stages.yaml and the templates it names (default folder: ``templates/`` beside it).

    Raises BotDefinitionError for the first problem in file order, located ``file:line:col``, with a hint.
    """
    result = validate_bot(path, templates_dir=templates_dir)
    if result.problems:
        raise result.problems[0].error()
    assert result.bot is not None
    return result.bot


def validate_bot(path: Path, *, templates_dir: Path | None = None) -> BotValidation:
    """Check stages.yaml like :func:`load_bot`, but return every problem found, sorted by position.

    Raises BotDefinitionError only when the file cannot be read at all.
    """
    shown = display_path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BotDefinitionError(
            f"cannot read {shown}: {exc.strerror or exc}",
            hint="pass the path of your stages.yaml, or set CHATOPS_STAGES",
        ) from None
    folder = templates_dir if templates_dir is not None else path.parent / "templates"
    try:
        source = parse_yaml(raw.decode("utf-8"), file=shown)
    except UnicodeDecodeError:
        return _failed(SourceLocation(shown, 1, 1), "file is not UTF-8 text", "save it as UTF-8")
    except YamlSourceError as exc:
        return _failed(
            SourceLocation(shown, exc.line, exc.col),
            exc.message,
            exc.hint or "check the YAML near this position: indentation, quotes, brackets",
        )
    if not isinstance(source.data, dict):
        return _failed(
            SourceLocation(shown, 1, 1),
            "stages.yaml must be a mapping with the keys " + ", ".join(BotDefinition.yaml_keys()),
            "start from the example in docs/stages.md",
        )
    try:
        bot = BotDefinition.model_validate(source.data)
    except ValidationError as exc:
        return BotValidation(None, _sorted(_schema_problems(exc, source)))
    bot = bot.model_copy(update={"path": path, "templates_dir": folder})
    bot._source = source
    problems = _reference_problems(bot, source, folder)
    used = _templates_used(bot, folder)
    bot = bot.model_copy(update={"version": _version(raw, folder, used), "template_files": tuple(sorted(used))})
    return BotValidation(bot, _sorted(problems))


def display_path(path: Path) -> str:
    """``path`` as a user would type it: relative to the working directory when inside it."""
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd()).as_posix()
        except ValueError:
            return str(path)
    return path.as_posix()


def _failed(location: SourceLocation, message: str, hint: str) -> BotValidation:
    return BotValidation(None, (BotProblem("E200", message, location, hint),))


def _sorted(problems: Iterable[BotProblem]) -> tuple[BotProblem, ...]:
    return tuple(sorted(problems, key=lambda p: (p.location.line, p.location.col)))


def _where(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _resolve(data: Any, loc: Iterable[str | int]) -> tuple[str | int, ...]:
    """The part of a pydantic error location that exists in the YAML data (union tags and such dropped)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:  # noqa: SIM114 (list and dict indexing differ in type)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            continue
        path.append(part)
    return tuple(path)


def _schema_problems(exc: ValidationError, source: YamlSource) -> list[BotProblem]:
    problems: list[BotProblem] = []
    seen: set[tuple[str | int, ...]] = set()
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        path = _resolve(source.data, loc)
        cause = (error.get("ctx") or {}).get("error")
        code = "E200"
        if isinstance(cause, InvalidValue):
            path, key = (*path, *cause.at), cause.key
            where = _where(path[:-1] if key else path)
            message = f"{where}: {cause.message}" if where else cause.message
            hint = cause.hint
        elif error["type"] == "missing":
            key, name = False, str(loc[-1])
            where = _where(path)
            message = f"{where}: missing required key '{name}'" if where else f"missing required key '{name}'"
            hint = f"add `{name}:`; see docs/stages.md"
            code = "E202" if loc == ("bot", "start") else code
            path = (*path, name)
        else:
            key = False
            text = _TYPE_MESSAGES.get(error["type"]) or error["msg"].removeprefix("Value error, ")
            text = text[:1].lower() + text[1:]
            value = error.get("input")
            if isinstance(value, str | int | float | bool) and not isinstance(cause, Exception):
                text += f" (got {value!r})"
            message = f"{_where(path)}: {text}" if path else text
            hint = "see docs/stages.md"
            node = source.node(path)
            if error["type"] == "string_type" and isinstance(node, yaml.ScalarNode) and not node.style:
                # YAML 1.1 reads yes/no/on/off as booleans and 1.0 as a number; quoting keeps the text.
                hint = f'YAML reads {node.value} as {type(value).__name__}; write it in quotes: "{node.value}"'
        if path in seen:
            continue
        seen.add(path)
        problems.append(BotProblem(code, message, source.location(path, key=key), hint))
    return problems


def _reference_problems(bot: BotDefinition, source: YamlSource, folder: Path) -> list[BotProblem]:
    problems: list[BotProblem] = []
    stages = list(bot.stages)

    def at(path: tuple[str | int, ...], code: str, message: str, hint: str) -> None:
        problems.append(BotProblem(code, message, source.location(path), hint))

    if bot.bot.start not in bot.stages:
        at(
            ("bot", "start"),
            "E202",
            f"bot.start names unknown stage '{bot.bot.start}'",
            did_you_mean(bot.bot.start, stages, label="defined stages"),
        )
    provider_names = [provider.name for provider in bot.providers]
    available: list[str] | None = None
    for name, stage in bot.stages.items():
        base = ("stages", name)
        targets: list[tuple[tuple[str | int, ...], str]] = [
            ((*base, "transitions", index, "to"), t.to) for index, t in enumerate(stage.transitions)
        ]
        if stage.next is not None:
            targets.append(((*base, "next"), stage.next))
        if stage.on_invalid is not None:
            targets.append(((*base, "on_invalid"), stage.on_invalid))
        for path, target in targets:
            if target not in bot.stages:
                at(
                    path,
                    "E201",
                    f"stage '{name}' goes to unknown stage '{target}'",
                    did_you_mean(target, stages, label="defined stages"),
                )
        for index, wanted in enumerate(stage.providers or ()):
            if wanted not in provider_names:
                at(
                    (*base, "providers", index),
                    "E200",
                    f"stage '{name}' uses unknown provider '{wanted}'",
                    did_you_mean(wanted, provider_names, label="declared providers"),
                )
        named: list[tuple[tuple[str | int, ...], str | None]] = [
            ((*base, field), getattr(stage, field)) for field in ("reply", "prompt", "on_error")
        ]
        if isinstance(stage.ask, dict):
            named.extend(((*base, "ask", field), template) for field, template in stage.ask.items())
        else:
            named.append(((*base, "ask"), stage.ask))
        for path, template in named:
            if template is not None and not (folder / template).is_file():
                if available is None:
                    available = template_files_in(folder)
                at(
                    path,
                    "E103",
                    f"stage '{name}' uses template '{template}', which is not in {display_path(folder)}/",
                    did_you_mean(template, available, label="templates there"),
                )
    for index, provider in enumerate(bot.providers):
        file = provider.options.get("file") if provider.use == "lookup" else None
        if isinstance(file, str) and not (bot.path.parent / file).is_file():
            at(
                ("providers", index, "file"),
                "E200",
                f"provider '{provider.name}' reads '{file}', which does not exist",
                "the path is relative to the folder of stages.yaml",
            )
    return problems


def template_files_in(folder: Path) -> list[str]:
    """Template files (``*.j2``, ``*.jinja``, ``*.jinja2``) under ``folder``, as sorted relative names."""
    if not folder.is_dir():
        return []
    found: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        base = Path(root).relative_to(folder)
        found.extend((base / f).as_posix() for f in files if f.endswith(TEMPLATE_SUFFIXES))
    return sorted(found)


def _templates_used(bot: BotDefinition, folder: Path) -> set[str]:
    """Templates named by stages and, transitively, those they include/import/extend by a literal name."""
    pending = [name for stage in bot.stages.values() for name in stage.template_names]
    used: set[str] = set()
    while pending:
        name = pending.pop()
        if name in used or not (folder / name).is_file():
            continue
        used.add(name)
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        pending.extend(TEMPLATE_INCLUDE.findall(text))
    return used


def _version(raw: bytes, folder: Path, used: Iterable[str]) -> str:
    digest = hashlib.sha256(b"stages.yaml\0" + raw)
    for name in sorted(used):
        digest.update(b"\0" + name.encode() + b"\0" + (folder / name).read_bytes())
    return digest.hexdigest()[:12]
