"""Python variable providers: loaded by dotted path (``package.module:attr``) or by entry point name.

The target is a class or factory called with the provider's spec (from stages.yaml); what it returns must have
``fetch(context)`` and may have ``provides``, ``cache_key(context)`` and ``close()``. Packages register providers in
the entry point group ``chatops.providers``::

    [project.entry-points."chatops.providers"]
    crm = "acme_chatops.crm:CrmProvider"

and stages.yaml then says ``use: crm``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import sys
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from chatops.errors import BotDefinitionError, ChatopsError

if TYPE_CHECKING:
    from chatops.templating.providers import ProviderContext, ProviderSpecLike, VariableProvider

ENTRY_POINT_GROUP = "chatops.providers"


def load_python_provider(
    spec: ProviderSpecLike, *, builtin_kinds: Sequence[str], base_dir: Path | None = None
) -> VariableProvider:
    """Import and build the provider ``spec.use`` names (a dotted path or an entry point name).

    A dotted path that is not importable as installed is looked up in ``base_dir`` (the bot's folder): when the
    module's top package or file is there, the folder joins the end of ``sys.path`` (installed packages keep
    precedence), so ``use: northwind.providers:loyalty`` works without ``PYTHONPATH=.``.
    Raises BotDefinitionError when it cannot be found, imported or built, or has no ``fetch``; the hint lists the
    kinds and entry points known here when the name matches nothing.
    """
    if ":" in spec.use or "." in spec.use:
        return _python_provider(spec, _import_attribute(spec, base_dir))
    entry_points = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    for entry_point in entry_points:
        if entry_point.name == spec.use:
            try:
                factory = entry_point.load()
            except Exception as exc:  # whatever the plugin's import raises
                raise BotDefinitionError(
                    f"provider {spec.name!r}: entry point {spec.use!r} ({entry_point.value}) failed to load: {exc}",
                    hint="check that the package providing it is installed in this environment",
                ) from None
            return _python_provider(spec, factory)
    known = [*builtin_kinds, *sorted(ep.name for ep in entry_points)]
    close = difflib.get_close_matches(spec.use, known, n=1)
    raise BotDefinitionError(
        f"provider {spec.name!r}: unknown kind {spec.use!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
        hint=f"use one of {', '.join(known)}, a dotted path 'package.module:attr', "
        f"or install a package with an entry point in group {ENTRY_POINT_GROUP}",
    )


def _in_folder(module_name: str, base_dir: Path | None) -> bool:
    """Whether ``module_name``'s top level is a module or package in ``base_dir``; adds the folder to sys.path."""
    if base_dir is None:
        return False
    top = module_name.split(".", 1)[0]
    folder = base_dir.resolve()
    if not ((folder / f"{top}.py").is_file() or (folder / top).is_dir()):
        return False
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    importlib.invalidate_caches()
    return True


def _import_attribute(spec: ProviderSpecLike, base_dir: Path | None = None) -> Any:
    module_name, _, attribute = spec.use.partition(":") if ":" in spec.use else spec.use.rpartition(".")
    try:
        try:
            target: Any = importlib.import_module(module_name)
        except ModuleNotFoundError as missing:
            if missing.name is None or not _in_folder(missing.name, base_dir):
                raise
            target = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the module raises while importing
        raise BotDefinitionError(
            f"provider {spec.name!r}: cannot import {module_name!r}: {exc}",
            hint="check the module name and that it is importable (installed, or in the folder of stages.yaml)",
        ) from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise BotDefinitionError(
                f"provider {spec.name!r}: {module_name!r} has no attribute {attribute!r}",
                hint="write the path as 'package.module:ClassOrFactory'",
            ) from None
    return target


def _python_provider(spec: ProviderSpecLike, factory: Any) -> VariableProvider:
    if not callable(factory):
        raise BotDefinitionError(
            f"provider {spec.name!r}: {spec.use!r} is not callable", hint="point at a class or a factory function"
        )
    try:
        provider = factory(spec)
    except ChatopsError as exc:
        raise BotDefinitionError(f"provider {spec.name!r}: {exc.message}", hint=exc.hint) from None
    except Exception as exc:  # the plugin's constructor failed
        raise BotDefinitionError(f"provider {spec.name!r}: {spec.use} failed to build: {exc}") from None
    if not callable(getattr(provider, "fetch", None)):
        raise BotDefinitionError(
            f"provider {spec.name!r}: {spec.use} returned {type(provider).__name__}, which has no fetch(context)",
            hint="see docs/providers.md for the VariableProvider protocol",
        )
    if not hasattr(provider, "provides"):
        provider = _WithProvides(provider)
    return cast("VariableProvider", provider)  # checked above: it has fetch() and provides


class _WithProvides:
    """A Python provider that declares no ``provides`` of its own: stages.yaml's list is used."""

    provides: Mapping[str, str] = {}

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.name: str = getattr(inner, "name", "")

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        return self._inner.fetch(context)  # type: ignore[no-any-return]

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def cache_key(self, context: ProviderContext) -> Hashable:
        key_of = getattr(self._inner, "cache_key", None)
        return key_of(context) if key_of is not None else (context.user.channel, context.user.id)
