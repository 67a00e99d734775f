"""The candidate bot definition of a replay: stages.yaml and templates, with ``--model`` and ``--set`` overrides."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from chatops.config.bot import load_bot
from chatops.config.bot_schema import BotDefinition
from chatops.errors import ConfigError


def load_candidate(
    stages: Path, *, templates_dir: Path | None = None, model: str | None = None, sets: Sequence[str] = ()
) -> BotDefinition:
    """Load ``stages`` and apply the overrides: ``model`` (``ai.model``), then each ``KEY=VALUE`` of ``sets``
    (a dotted path into stages.yaml, e.g. ``ai.temperature=0``, ``stages.menu.prompt=new.j2``; the value is YAML).

    The definition's version gains a suffix naming the overrides. Raises BotDefinitionError for stages.yaml and
    ConfigError for an override that names no key or holds a value the key does not accept.
    """
    bot = load_bot(stages, templates_dir=templates_dir)
    assignments = ([f"ai.model={model}"] if model else []) + list(sets)
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE", hint="e.g. --set ai.temperature=0")
        try:
            value = yaml.safe_load(raw) if raw.strip() else raw
        except yaml.YAMLError:
            value = raw
        bot = _override(bot, key.strip().split("."), value, key.strip())
    if assignments:
        digest = hashlib.sha256("\n".join(assignments).encode()).hexdigest()[:8]
        bot = bot.model_copy(update={"version": f"{bot.version}+set.{digest}"})
    return bot


def _override(node: Any, parts: list[str], value: Any, where: str) -> Any:
    key = parts[0]
    if isinstance(node, BaseModel):
        fields = type(node).model_fields
        name = next((n for n, info in fields.items() if key in (n, info.alias)), None)
        if name is None or name in getattr(type(node), "_internal", ()):
            raise ConfigError(f"--set {where}: no key {key!r} here", hint="keys: " + ", ".join(sorted(fields)))
        if len(parts) > 1:
            return node.model_copy(update={name: _override(getattr(node, name), parts[1:], value, where)})
        info = fields[name]
        adapter: TypeAdapter[Any] = TypeAdapter(Annotated[info.annotation, *info.metadata])  # type: ignore[arg-type]
        try:
            checked = adapter.validate_python(value)
        except ValidationError as exc:
            raise ConfigError(f"--set {where}: {exc.errors()[0]['msg']}") from None
        return node.model_copy(update={name: checked})
    if isinstance(node, dict):
        if len(parts) == 1:
            return {**node, key: value}
        if key not in node:
            raise ConfigError(f"--set {where}: no key {key!r} here", hint="keys: " + ", ".join(map(str, node)))
        return {**node, key: _override(node[key], parts[1:], value, where)}
    raise ConfigError(f"--set {where}: {key!r} is not inside a section that can be set")
