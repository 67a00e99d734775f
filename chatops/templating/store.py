"""The template store: loads the bot's templates from ``templates/``, compiles them once per content, renders them.

Compiled templates are cached by content hash. Each render checks the file's ``stat()`` (mtime, size, inode) and
only reads and hashes the bytes again when that changed, so an edited template is picked up by the next turn
without a restart, at the cost of one ``stat()`` per template per render. A file modified within
``_RACY_WINDOW_NS`` of when it was last hashed is re-hashed every time, because file systems with coarse
timestamps can hide a second write of the same size in the same tick (git's "racily clean" rule).

``version(name)`` is the first 12 hex digits of the sha256 of the file's bytes: the version recorded on each turn.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jinja2 import BaseLoader, Environment, Template, TemplateNotFound, meta
from jinja2.loaders import split_template_path

from chatops.errors import TemplateError
from chatops.templating.sandbox import MAX_STEPS, ChatopsSandbox, render_budget, template_error

MAX_OUTPUT_CHARS = 64 * 1024  # far above any channel's message cap; only a runaway template gets there
_RACY_WINDOW_NS = 2_000_000_000


@dataclass(frozen=True)
class Rendered:
    """The text a template produced, with the template's name and version (short sha256 of its bytes)."""

    text: str
    template: str
    version: str


@dataclass(frozen=True)
class _Loaded:
    stat_key: tuple[int, int, int]
    hashed_at_ns: int
    digest: str
    template: Template
    source: str


class TemplateStore:
    """The bot's templates under ``templates_dir``, compiled in the chatops sandbox. Safe to share between threads.

    ``max_output_chars`` caps one render's output; ``max_steps`` caps its loop iterations and calls.
    """

    def __init__(
        self,
        templates_dir: Path,
        *,
        max_output_chars: int = MAX_OUTPUT_CHARS,
        max_steps: int = MAX_STEPS,
    ) -> None:
        self.templates_dir = Path(templates_dir)
        self.max_output_chars = max_output_chars
        self.max_steps = max_steps
        self._lock = threading.Lock()
        self._loaded: dict[str, _Loaded] = {}
        self._compiled: dict[tuple[str, str], Template] = {}  # (name, sha256) -> compiled; survives edits back
        self._filenames: dict[str, str] = {}  # the file name Jinja compiled under -> the path users see
        self._reads = 0
        self._compiles = 0
        # cache_size=0: Jinja's own mtime cache is off, every lookup comes through _StoreLoader.load.
        self.environment = ChatopsSandbox(loader=_StoreLoader(self), cache_size=0)

    def path(self, name: str) -> Path:
        """Where template ``name`` lives; raises TemplateError for names that leave ``templates_dir``."""
        try:
            pieces = split_template_path(name)
        except TemplateNotFound:
            raise TemplateError(
                f"template name {name!r} leaves {self.templates_dir}", hint="name templates relative to it"
            ) from None
        return self.templates_dir.joinpath(*pieces)

    def version(self, name: str) -> str:
        """The short sha256 (12 hex digits) of template ``name``'s bytes; raises TemplateError if it is missing."""
        return self._load(name).digest[:12]

    def source(self, name: str) -> str:
        """The current text of template ``name``; raises TemplateError if it is missing or not UTF-8."""
        return self._load(name).source

    def variables_used(self, name: str) -> frozenset[str]:
        """Top-level variable names template ``name`` reads, following literal includes/imports/extends.

        The engine fetches only the providers these name; raises TemplateError when a template is missing.
        """
        seen: set[str] = set()
        found: set[str] = set()
        pending = [name]
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            try:
                tree = self.environment.parse(self._load(current).source)
            except Exception as exc:  # TemplateSyntaxError
                raise template_error(exc, where=str(self.path(current)), filenames=self._filenames) from None
            found |= meta.find_undeclared_variables(tree)
            pending.extend(ref for ref in meta.find_referenced_templates(tree) if ref is not None)
        return frozenset(found)

    def cache_info(self) -> dict[str, int]:
        """How often files were read and templates compiled since the store was made (for tests and metrics)."""
        with self._lock:
            return {"reads": self._reads, "compiles": self._compiles, "cached": len(self._compiled)}

    def render(self, name: str, variables: Mapping[str, Any]) -> Rendered:
        """Render template ``name`` with ``variables``.

        Raises TemplateError (``file:line: what``) for a missing template, a syntax error, an undefined variable,
        a sandbox violation, recursion, or output longer than ``max_output_chars``.
        """
        loaded = self._load(name)
        where = str(self.path(name))
        chunks: list[str] = []
        size = 0
        try:
            with render_budget(self.max_steps):
                output = cast(Generator[str, None, None], loaded.template.generate(variables))
                try:
                    for chunk in output:
                        size += len(chunk)
                        if size > self.max_output_chars:
                            raise TemplateError(
                                f"{where}: output longer than {self.max_output_chars} characters",
                                hint="a loop produces too much text; bound it",
                            )
                        chunks.append(chunk)
                finally:
                    output.close()
        except TemplateError:
            raise
        except Exception as exc:  # Jinja and Python errors from inside the template all become TemplateError
            raise template_error(exc, where=where, filenames=self._filenames) from None
        return Rendered(text="".join(chunks), template=name, version=loaded.digest[:12])

    def _load(self, name: str) -> _Loaded:
        path = self.path(name)
        try:
            stat = path.stat()
        except OSError:
            raise TemplateError(
                f"template {name!r} not found in {self.templates_dir}",
                hint="create the file, or fix the name in stages.yaml",
            ) from None
        stat_key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            loaded = self._loaded.get(name)
        settled = loaded is not None and stat.st_mtime_ns < loaded.hashed_at_ns - _RACY_WINDOW_NS
        if loaded is not None and settled and loaded.stat_key == stat_key:
            return loaded
        hashed_at_ns = time.time_ns()  # wall clock only to compare with file mtimes, never for bot logic
        data = path.read_bytes()
        with self._lock:
            self._reads += 1
        digest = hashlib.sha256(data).hexdigest()
        try:
            source = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TemplateError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        with self._lock:
            template = self._compiled.get((name, digest))
        if template is None:
            template = self._compile(name, path, source)
        loaded = _Loaded(stat_key, hashed_at_ns, digest, template, source)
        with self._lock:
            self._compiled[(name, digest)] = template
            self._loaded[name] = loaded
        return loaded

    def _compile(self, name: str, path: Path, source: str) -> Template:
        filename = os.fspath(path.resolve())
        with self._lock:
            self._filenames[filename] = str(path)
            self._compiles += 1
        try:
            code = self.environment.compile(source, name, filename)
        except Exception as exc:  # TemplateSyntaxError, and anything else the compiler raises
            raise template_error(exc, where=str(path), filenames=self._filenames) from None
        return self.environment.template_class.from_code(
            self.environment, code, self.environment.make_globals(None), _always_current
        )

    def _template_for_jinja(self, name: str) -> Template:
        return self._load(name).template


def _always_current() -> bool:
    return True  # freshness is checked by TemplateStore._load on every lookup


class _StoreLoader(BaseLoader):
    """Serves ``{% include %}``/``{% import %}``/``{% extends %}`` from the store and its content-hash cache."""

    def __init__(self, store: TemplateStore) -> None:
        self._store = store

    def get_source(self, environment: Environment, template: str) -> tuple[str, str | None, Callable[[], bool]]:
        return self._store.source(template), os.fspath(self._store.path(template)), _always_current

    def load(self, environment: Environment, name: str, globals: Any = None) -> Template:
        try:
            return self._store._template_for_jinja(name)
        except TemplateError as exc:
            raise TemplateNotFound(name, message=exc.message) from None
