"""The Jinja2 sandbox every chatops template and provider expression runs in.

Templates are written by the bot's authors and live in the bot's repository; user text only ever reaches them as a
variable's value, never as template source. The limits here stop a template that loops or allocates without bound
(by mistake) from stalling a worker:

- ``range()`` is capped by Jinja's own sandbox (``MAX_RANGE`` items);
- every ``{% for %}`` iteration and every call costs one step of a per-render budget (``max_steps``), so nested loops
  that produce no output still stop;
- ``*`` and ``**`` refuse results larger than ``MAX_SIZE`` items/characters or ``MAX_INT_BITS`` bits, and format
  strings refuse field widths of ``MAX_SIZE`` or more;
- recursion ends in Python's own ``RecursionError``.

The output cap (characters rendered) is enforced by :class:`chatops.templating.store.TemplateStore`, which renders
through ``generate()`` and stops as soon as the cap is passed. Every failure becomes a
:class:`chatops.errors.TemplateError` saying ``file:line: what``.
"""

from __future__ import annotations

import functools
import re
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, nodes
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.ext import Extension
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatops.errors import TemplateError

MAX_STEPS = 500_000  # loop iterations + calls in one render; a real chat template uses a few hundred
MAX_SIZE = 100_000  # items or characters one `*` or format field may produce (same as Jinja's MAX_RANGE)
MAX_INT_BITS = 4096  # `**` on integers beyond this would take unbounded time and memory

# A format field or %-conversion whose width/precision has 6+ digits would allocate MAX_SIZE characters or more.
_HUGE_FORMAT_FIELD = re.compile(r"[%:][^%:{}]*?\d{6,}")


class RenderLimitError(SecurityError):
    """A template went past one of the sandbox's limits (a SecurityError so Jinja treats it as such)."""


@dataclass
class _Budget:
    steps_left: int

    def spend(self, steps: int = 1) -> None:
        self.steps_left -= steps
        if self.steps_left < 0:
            raise RenderLimitError("template stopped: too many loop iterations or calls (a loop without bound?)")


# The budget of the render running in this thread (None outside a render: expressions used at build time).
_ACTIVE_BUDGET: ContextVar[_Budget | None] = ContextVar("chatops_template_budget", default=None)


class _CountedIterable:
    """Wraps a for-loop's iterable so each item costs one step; keeps ``len()`` for ``loop.length``."""

    __slots__ = ("_budget", "_iterable")

    def __init__(self, iterable: Iterable[Any], budget: _Budget) -> None:
        self._iterable = iterable
        self._budget = budget

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            self._budget.spend()
            yield item

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]  # TypeError when unsized is what LoopContext expects


class _LoopGuard(Extension):
    """Holds :meth:`counted`, which every ``{% for %}`` iterable is wrapped in at parse time."""

    identifier = "chatops.loop_guard"

    def counted(self, iterable: Any) -> Any:
        budget = _ACTIVE_BUDGET.get()
        return iterable if budget is None else _CountedIterable(iterable, budget)


class Namespace(Mapping[str, Any]):
    """The read-only variables of one provider (``user``, ``order`` …): ``{{ order.status }}`` in templates.

    A missing attribute renders as an error naming the provider and what it does provide.
    """

    __slots__ = ("_label", "_values")

    def __init__(self, label: str, values: Mapping[str, Any]) -> None:
        self._label = label
        self._values = dict(values)

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"<{self._label}: {', '.join(self._values)}>"

    def missing_hint(self, attribute: str) -> str:
        provides = ", ".join(sorted(self._values)) or "nothing"
        return f"{self._label!r} has no attribute {attribute!r} (it provides: {provides})"


def _check_format_string(text: str) -> None:
    if _HUGE_FORMAT_FIELD.search(text):
        raise RenderLimitError(f"format field too wide (limit {MAX_SIZE} characters)")


def _sized_result(left: Any, right: Any) -> None:
    """Refuse ``sequence * n`` results past MAX_SIZE before they are allocated."""
    for seq, count in ((left, right), (right, left)):
        sized = isinstance(seq, str | bytes | list | tuple)
        if sized and isinstance(count, int) and not isinstance(count, bool) and len(seq) * count > MAX_SIZE:
            raise RenderLimitError(f"result of '*' too large (limit {MAX_SIZE} items or characters)")


def _bounded_power(left: Any, right: Any) -> None:
    integers = isinstance(left, int) and isinstance(right, int)
    if integers and right > 0 and abs(left) > 1 and left.bit_length() * right > MAX_INT_BITS:
        raise RenderLimitError(f"result of '**' too large (limit {MAX_INT_BITS} bits)")


def _sized_filter(filter_func: Callable[..., Any], *, formats: bool = False) -> Callable[..., Any]:
    """Wrap a Jinja filter so integer arguments (widths, counts) and, with ``formats``, its format string stay
    within MAX_SIZE."""
    # Filters marked with @pass_context & co. take that object first, then the value.
    skip = 2 if getattr(filter_func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(filter_func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if formats and len(args) >= skip and isinstance(args[skip - 1], str):
            _check_format_string(args[skip - 1])
        for value in (*args[skip:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
                raise RenderLimitError(f"filter argument {value} too large (limit {MAX_SIZE})")
        return filter_func(*args, **kwargs)

    return wrapper


class ChatopsSandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox + strict undefined + the step budget and size limits described in the module docstring.

    Attribute access on a mapping prefers its keys, so ``{{ order.items }}`` is the ``items`` value of a JSON
    object, not the dict method.
    """

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *, finalize: Callable[..., Any] | None = None, **options: Any) -> None:
        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,  # chat text is plain text; HTML escaping would show &amp; to users
            extensions=[_LoopGuard],
            finalize=finalize,
            keep_trailing_newline=False,
            **options,
        )
        for name in ("center", "indent", "batch", "slice"):
            self.filters[name] = _sized_filter(self.filters[name])
        self.filters["format"] = _sized_filter(self.filters["format"], formats=True)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Jinja has no public hook for loop iteration; wrapping each For iterable in the AST is the narrowest one.
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):
            guard = nodes.ExtensionAttribute(_LoopGuard.identifier, "counted", lineno=loop.lineno)
            loop.iter = nodes.Call(guard, [loop.iter], [], None, None, lineno=loop.iter.lineno)
        return tree

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _ACTIVE_BUDGET.get()
        if budget is not None:
            budget.spend()
        return super().call(context, obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _sized_result(left, right)
        elif operator == "**":
            _bounded_power(left, right)
        elif operator == "%" and isinstance(left, str):
            _check_format_string(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        wrapped = super().wrap_str_format(value)
        if wrapped is None or not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return wrapped
        owner = value.__self__
        if isinstance(owner, str):
            _check_format_string(owner)
        return wrapped

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            try:
                return obj[attribute]
            except (TypeError, LookupError):
                if isinstance(obj, Namespace) and not hasattr(Mapping, attribute):
                    return self.undefined(hint=obj.missing_hint(attribute), obj=obj, name=attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(obj, Namespace) and isinstance(argument, str) and argument not in obj:
            return self.undefined(hint=obj.missing_hint(argument), obj=obj, name=argument)
        return super().getitem(obj, argument)


@contextmanager
def render_budget(max_steps: int = MAX_STEPS) -> Iterator[None]:
    """Give the renders inside the ``with`` block ``max_steps`` steps of loop iterations and calls."""
    token = _ACTIVE_BUDGET.set(_Budget(max_steps))
    try:
        yield
    finally:
        _ACTIVE_BUDGET.reset(token)


def template_error(exc: BaseException, *, where: str, filenames: Mapping[str, str] | None = None) -> TemplateError:
    """Turn a Jinja/Python error raised while compiling or rendering into a TemplateError ``file:line: what``.

    ``where`` names the template when no line is known; ``filenames`` maps the file names Jinja compiled templates
    under to the names shown to users (so an error inside an included template points at that file).
    """
    location = where
    if isinstance(exc, TemplateSyntaxError):
        shown = (filenames or {}).get(exc.filename or "", where)
        return TemplateError(
            f"{shown}:{exc.lineno}: syntax error: {exc.message}",
            hint="see https://jinja.palletsprojects.com/en/stable/templates/ for the template syntax",
        )
    line = _template_line(exc, filenames or {})
    if line is not None:
        location = f"{line[0]}:{line[1]}"
    if isinstance(exc, UndefinedError):
        return TemplateError(
            f"{location}: {exc.message}",
            hint="use a variable a provider declares, or guard it with `is defined` / `|default(...)`",
        )
    if isinstance(exc, RenderLimitError):
        return TemplateError(f"{location}: {exc.message}", hint="bound the loop or the size of the value")
    if isinstance(exc, SecurityError):
        return TemplateError(f"{location}: blocked by the template sandbox: {exc.message}")
    if isinstance(exc, RecursionError):
        return TemplateError(f"{location}: recursion too deep", hint="a macro or include calls itself without end")
    if isinstance(exc, OverflowError):
        return TemplateError(f"{location}: {exc}", hint="the sandbox caps range() at 100000 items")
    if isinstance(exc, JinjaTemplateError):
        return TemplateError(f"{location}: {exc.message}")
    return TemplateError(f"{location}: {type(exc).__name__}: {exc}")


def _template_line(exc: BaseException, filenames: Mapping[str, str]) -> tuple[str, int] | None:
    """The innermost traceback frame that belongs to a template (Jinja rewrites frames to template lines)."""
    found: tuple[str, int] | None = None
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename in filenames:
            found = (filenames[filename], tb.tb_lineno)
        tb = tb.tb_next
    return found


class InlineTemplate:
    """A one-line template from stages.yaml (an http provider's URL): compiled once, rendered many times."""

    def __init__(self, source: str, *, label: str, finalize: Callable[[Any], Any] | None = None) -> None:
        self.label = label
        self.source = source
        environment = ChatopsSandbox(finalize=finalize)
        try:
            self._template = environment.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateError(f"{label}: syntax error: {exc.message}", hint=f"the template is {source!r}") from None

    def value(self, variables: Mapping[str, Any]) -> str:
        """Same as :meth:`render` (so templates and expressions can stand for each other)."""
        return self.render(variables)

    def render(self, variables: Mapping[str, Any]) -> str:
        """Render with ``variables``; raises TemplateError (undefined variable, sandbox limit)."""
        try:
            with render_budget():
                return self._template.render(variables)
        except Exception as exc:  # every render failure is reported the same way
            raise template_error(exc, where=self.label) from None


class Expression:
    """A Jinja expression from stages.yaml (``user.id``, ``message.text | lower``) evaluated in the sandbox."""

    def __init__(self, source: str, *, label: str) -> None:
        self.label = label
        self.source = source
        try:
            self._expression = ChatopsSandbox().compile_expression(source, undefined_to_none=False)
        except TemplateSyntaxError as exc:
            raise TemplateError(
                f"{label}: syntax error in expression {source!r}: {exc.message}",
                hint="write a Jinja expression without braces, e.g. `user.id` or `message.text | trim`",
            ) from None

    def value(self, variables: Mapping[str, Any]) -> Any:
        """Same as :meth:`evaluate` (so templates and expressions can stand for each other)."""
        return self.evaluate(variables)

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The expression's value; raises TemplateError (undefined variable, sandbox limit)."""
        try:
            with render_budget():
                value = self._expression(**variables)
                if isinstance(value, Undefined):
                    str(value)  # StrictUndefined raises the UndefinedError naming the variable
                return value
        except Exception as exc:  # every evaluation failure is reported the same way
            raise template_error(exc, where=self.label) from None


def template_or_expression(source: str, *, label: str) -> InlineTemplate | Expression:
    """``source`` with ``{{ }}`` or ``{% %}`` is a template (its value is text); otherwise an expression (its value
    keeps its type). Both have ``value(variables)``; raises TemplateError on a syntax error."""
    if "{{" in source or "{%" in source:
        return InlineTemplate(source, label=label)
    return Expression(source, label=label)
