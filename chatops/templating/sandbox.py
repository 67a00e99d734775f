"""The Jinja2 sandbox every chatops template and provider expression runs in.

Templates are written by the bot's authors and live in the bot's repository; user text only ever reaches them as a
variable's value, never as template source. The limits here stop a template that loops or allocates without bound
(by mistake, or written to hurt) from stalling a worker or exhausting its memory:

- ``range()`` is capped by Jinja's own sandbox (``MAX_RANGE`` items);
- every ``{% for %}`` iteration and every call costs one step of a per-render budget (``max_steps``), so nested loops
  that produce no output still stop;
- **no value a template builds may pass ``MAX_SIZE`` characters or items**, and all it builds in one render
  together may not pass ``max_built``. "Builds" is every way the sandbox offers: the operators ``+ * % ~``, every
  filter, every method call (``replace``, ``ljust``/``rjust``/``center``/``zfill``, ``expandtabs``, ``join``,
  ``format``/``format_map`` with nested widths, ``translate``, ``int.to_bytes`` …), ``lipsum()``, each ``{{ }}``
  output (also inside macros and ``{% set %}`` blocks, which Jinja joins in memory) and the literal text of loop
  bodies and included templates. Where a result can be far larger than its inputs, its size is worked out first
  (:mod:`chatops.templating.sizes`) and the operation is refused before it allocates; other results are checked
  as soon as they exist;
- ``**`` and ``*`` on integers refuse results past ``MAX_INT_BITS`` bits;
- recursion ends in Python's own ``RecursionError``.

The output cap (characters rendered) is enforced by :class:`chatops.templating.store.TemplateStore`, which renders
through ``generate()`` and stops as soon as the cap is passed. Every failure becomes a
:class:`chatops.errors.TemplateError` saying ``file:line: what``.
"""

from __future__ import annotations

import functools
import types
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from string import Formatter
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.environment import Environment
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.ext import Extension
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedEscapeFormatter, SandboxedFormatter
from markupsafe import Markup

from chatops.errors import TemplateError
from chatops.templating import sizes

MAX_STEPS = 500_000  # loop iterations + calls in one render; a real chat template uses a few hundred
MAX_SIZE = 100_000  # characters or items of any one value a template builds (same as Jinja's MAX_RANGE)
MAX_BUILT = 20_000_000  # characters or items built in one render, all values together (~20-80 MB at most)
MAX_INT_BITS = 4096  # `**` and `*` on integers beyond this would take unbounded time and memory

# Filters whose arguments are sizes (widths, counts): a huge one is refused before the filter runs.
_SIZE_ARGUMENT_FILTERS = frozenset({"center", "indent", "wordwrap", "batch", "slice", "truncate"})
# Filters that turn their value into text first: str() of a list of long strings is long too.
_TEXT_FILTERS = frozenset(
    {"center", "indent", "wordwrap", "replace", "format", "string", "e", "escape", "forceescape", "upper", "lower"}
    | {"title", "capitalize", "trim", "striptags", "urlize", "wordcount", "urlencode", "tojson", "pprint", "xmlattr"}
    | {"safe", "truncate"}
)


class RenderLimitError(SecurityError):
    """A template went past one of the sandbox's limits (a SecurityError so Jinja treats it as such)."""


@dataclass
class _Budget:
    steps_left: int
    built_left: int
    max_built: int

    def spend(self, steps: int = 1) -> None:
        self.steps_left -= steps
        if self.steps_left < 0:
            raise RenderLimitError("template stopped: too many loop iterations or calls (a loop without bound?)")

    def charge(self, size: int) -> None:
        self.built_left -= size
        if self.built_left < 0:
            raise RenderLimitError(
                f"template stopped: it built more than {self.max_built:,} characters or items in one render "
                "(text or lists growing in a loop?)"
            )


# The budget of the render running in this thread (None outside a render: expressions used at build time).
_ACTIVE_BUDGET: ContextVar[_Budget | None] = ContextVar("chatops_template_budget", default=None)


def _build(size: int, what: str) -> None:
    """Allow a value of ``size`` characters/items built by ``what``; raises RenderLimitError past a limit."""
    if size > MAX_SIZE:
        raise RenderLimitError(f"result of {what} too large ({size:,} characters or items; the limit is {MAX_SIZE:,})")
    budget = _ACTIVE_BUDGET.get()
    if budget is not None:
        budget.charge(size)


def _check_size_argument(value: Any, what: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_SIZE:
        raise RenderLimitError(f"{what} argument {value} too large (limit {MAX_SIZE})")


class _CountedIterable:
    """Wraps a for-loop's iterable so each item costs one step (and the loop body's literal text, which Jinja
    appends per iteration); keeps ``len()`` for ``loop.length``."""

    __slots__ = ("_budget", "_iterable", "_text")

    def __init__(self, iterable: Iterable[Any], budget: _Budget, text: int) -> None:
        self._iterable = iterable
        self._budget = budget
        self._text = text

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            self._budget.spend()
            if self._text:
                self._budget.charge(self._text)
            yield item

    def __len__(self) -> int:
        return len(self._iterable)  # type: ignore[arg-type]  # TypeError when unsized is what LoopContext expects


class _LoopGuard(Extension):
    """Holds what the parse-time rewrites call: :meth:`counted` for every ``{% for %}`` iterable and
    :meth:`concat` for every ``~``."""

    identifier = "chatops.loop_guard"

    def counted(self, iterable: Any, text: int = 0) -> Any:
        budget = _ACTIVE_BUDGET.get()
        return iterable if budget is None else _CountedIterable(iterable, budget, text)

    def concat(self, *parts: Any) -> str:
        size = 0
        for part in parts:
            size += sizes.text_size(part, MAX_SIZE)
            if size > MAX_SIZE:
                break
        _build(size, "'~'")
        return "".join(map(str, parts))


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


def _text_of(value: Any) -> str:
    """``str(value)`` once its estimated size is within MAX_SIZE (a filter is about to do the same)."""
    if not isinstance(value, str):
        _build(sizes.text_size(value, MAX_SIZE), "converting a value to text")
    return str(value)


def _option(rest: Sequence[Any], kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    return rest[index] if len(rest) > index else kwargs.get(name, default)


def _filter_size(name: str, value: Any, rest: Sequence[Any], kwargs: Mapping[str, Any]) -> int | None:
    """What filter ``name`` would build from ``value``, for the filters whose result can dwarf their input."""
    if name == "center":
        width = _option(rest, kwargs, 0, "width", 80)
        return max(len(_text_of(value)), width if isinstance(width, int) else 0)
    if name == "indent":
        return sizes.lines_size(_text_of(value), _option(rest, kwargs, 0, "width", 4))
    if name == "wordwrap":
        text = _text_of(value)
        width = _option(rest, kwargs, 0, "width", 79)
        wrap = _option(rest, kwargs, 2, "wrapstring", None) or "\n"
        lines = 2 * len(text) // max(width if isinstance(width, int) else 1, 1) + text.count("\n") + 1
        return len(text) + lines * sizes.text_size(wrap, MAX_SIZE)
    if name == "replace":
        count = _option(rest, kwargs, 2, "count", None)
        arguments = (*rest[:2], -1 if count is None else count)
        return sizes.method_size(_text_of(value), "replace", arguments, {}, MAX_SIZE)
    if name == "format":
        return sizes.printf_size(_text_of(value), dict(kwargs) or tuple(rest), MAX_SIZE)
    if name == "join" and _option(rest, kwargs, 1, "attribute", None) is None:
        return sizes.joined_size(_option(rest, kwargs, 0, "d", ""), value, MAX_SIZE)
    if name == "sum" and isinstance(value, Sequence) and _option(rest, kwargs, 0, "attribute", None) is None:
        start = _option(rest, kwargs, 1, "start", 0)
        parts = [start, *value]
        if any(isinstance(part, str | bytes | list | tuple) for part in parts):
            return sum(sizes.size_of(part) or 0 for part in parts)
    return None


def _guarded_filter(name: str, filter_func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a Jinja filter so what it builds counts against the render's limits (see the module docstring)."""
    # Filters marked with @pass_context & co. take that object first, then the value.
    skip = 2 if getattr(filter_func, "jinja_pass_arg", None) is not None else 1

    @functools.wraps(filter_func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if len(args) < skip:
            return filter_func(*args, **kwargs)
        value, rest = args[skip - 1], args[skip:]
        if name in _SIZE_ARGUMENT_FILTERS:
            for argument in (*rest, *kwargs.values()):
                _check_size_argument(argument, "filter")
        if name in ("join", "sum") and not isinstance(value, Sequence | str | Mapping):
            value = list(value)  # a generator (map, select …): its items are needed for the size and the filter
            args = (*args[: skip - 1], value, *rest)
        if name in _TEXT_FILTERS and not isinstance(value, str):
            _build(sizes.text_size(value, MAX_SIZE), f"filter '{name}'")
        size = _filter_size(name, value, rest, kwargs)
        if size is not None:
            _build(size, f"filter '{name}'")
        result = filter_func(*args, **kwargs)
        if size is None:
            built = sizes.size_of(result)
            if built is not None and result is not value:
                _build(built, f"filter '{name}'")
        return result

    return wrapper


def _bounded_lipsum(lipsum: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(lipsum)
    def wrapper(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
        words = (n if isinstance(n, int) else 0) * (max if isinstance(max, int) else 0)
        _build(words * 12, "lipsum()")  # a word and its space: 12 characters at most
        return lipsum(n, html, min, max)

    return wrapper


class _SizedFields:
    """Formatter mixin: each ``{}`` field's size is worked out (nested ``{:>{w}}`` widths filled in) and the
    running total checked before the field is formatted."""

    _total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        self._total += sizes.format_field_size(value, format_spec, MAX_SIZE)
        _build(self._total, "'.format()'")
        return super().format_field(value, format_spec)  # type: ignore[misc]  # the formatter it is mixed into


class _SizedFormatter(_SizedFields, SandboxedFormatter):
    pass


class _SizedEscapeFormatter(_SizedFields, SandboxedEscapeFormatter):
    pass


class _ChargedTemplate(Template):
    """A template whose rendered chunks count against the render's budget: an ``{% include %}`` inside a loop
    inside a macro would otherwise pile its literal text up in memory unchecked."""

    @classmethod
    def _from_namespace(
        cls, environment: Environment, namespace: MutableMapping[str, Any], globals: MutableMapping[str, Any]
    ) -> Template:
        # Jinja's private constructor hook (stable since 2.x); the only place every compiled template passes.
        template = super()._from_namespace(environment, namespace, globals)
        root = template.root_render_func

        def charged(context: Context) -> Generator[str, None, None]:
            budget = _ACTIVE_BUDGET.get()  # the render's, for the whole render (one lookup, not one per chunk)
            if budget is None:
                yield from root(context)
                return
            for chunk in root(context):
                budget.charge(len(chunk))
                yield chunk

        template.root_render_func = charged
        return template


class ChatopsSandbox(ImmutableSandboxedEnvironment):
    """Immutable sandbox + strict undefined + the step budget and size limits described in the module docstring.

    Attribute access on a mapping prefers its keys, so ``{{ order.items }}`` is the ``items`` value of a JSON
    object, not the dict method.
    """

    intercepted_binops = frozenset({"+", "*", "**", "%"})
    template_class = _ChargedTemplate

    def __init__(self, *, finalize: Callable[..., Any] | None = None, **options: Any) -> None:
        def bounded_output(value: Any) -> Any:
            size = len(value) if type(value) is str else sizes.text_size(value, MAX_SIZE)  # the common case first
            _build(size, "an output value")
            return value if finalize is None else finalize(value)

        super().__init__(
            undefined=StrictUndefined,
            autoescape=False,  # chat text is plain text; HTML escaping would show &amp; to users
            extensions=[_LoopGuard],
            finalize=bounded_output,
            keep_trailing_newline=False,
            **options,
        )
        for name, filter_func in list(self.filters.items()):
            self.filters[name] = _guarded_filter(name, filter_func)
        lipsum: Callable[..., str] = self.globals["lipsum"]  # type: ignore[assignment]  # Jinja's generate_lorem_ipsum
        self.globals["lipsum"] = _bounded_lipsum(lipsum)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Jinja has no public hook for loop iteration or for `~`: rewriting the AST is the narrowest one.
        tree = super()._parse(source, name, filename)
        for loop in list(tree.find_all(nodes.For)):
            text = sum(len(data.data) for data in _own_text(loop.body))
            guard = nodes.ExtensionAttribute(_LoopGuard.identifier, "counted", lineno=loop.lineno)
            arguments = [loop.iter, nodes.Const(text, lineno=loop.lineno)]
            loop.iter = nodes.Call(guard, arguments, [], None, None, lineno=loop.iter.lineno)
        for concat in list(tree.find_all(nodes.Concat)):
            join = nodes.ExtensionAttribute(_LoopGuard.identifier, "concat", lineno=concat.lineno)
            _replace_node(tree, concat, nodes.Call(join, list(concat.nodes), [], None, None, lineno=concat.lineno))
        return tree

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        budget = _ACTIVE_BUDGET.get()
        if budget is not None:
            budget.spend()
        owner = getattr(obj, "__self__", None)
        size = None
        if isinstance(obj, types.MethodType | types.BuiltinMethodType) and owner is not None:
            method = getattr(obj, "__name__", "")
            if method == "join" and args and not isinstance(args[0], Sequence):
                args = (list(args[0]), *args[1:])  # a generator: its items are needed for the size and the join
            size = sizes.method_size(owner, method, args, kwargs, MAX_SIZE)
            if size is not None:
                _build(size, f"'.{method}()'")
        result = super().call(context, obj, *args, **kwargs)
        built = sizes.size_of(result) if size is None else None
        if built is not None and result is not owner:
            _build(built, f"calling {getattr(obj, '__name__', 'a function')}()")
        return result

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        bits = None
        size = None
        if operator == "*":
            size = sizes.repeat_size(left, right)
            bits = sizes.product_bits(left, right)
        elif operator == "+":
            size = sizes.concat_size(left, right)
        elif operator == "**":
            bits = sizes.power_bits(left, right)
        elif operator == "%" and isinstance(left, str):
            size = sizes.printf_size(left, right, MAX_SIZE)
        if bits is not None and bits > MAX_INT_BITS:
            raise RenderLimitError(f"result of '{operator}' too large (limit {MAX_INT_BITS} bits)")
        if size is not None:
            _build(size, f"'{operator}'")
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's own wrapper, with a formatter that sizes each field before formatting it.
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        owner = value.__self__
        if value.__name__ not in ("format", "format_map") or not isinstance(owner, str):
            return None
        format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            formatter: Formatter = (
                _SizedEscapeFormatter(self, escape=owner.escape) if isinstance(owner, Markup) else _SizedFormatter(self)
            )
            if format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one mapping argument")
                kwargs = args[0]
                args = ()
            return type(owner)(formatter.vformat(owner, args, kwargs))

        wrapper.__name__ = value.__name__
        return wrapper

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


def _own_text(body: Sequence[nodes.Node]) -> Iterator[nodes.TemplateData]:
    """The literal text a loop body appends on each iteration (not that of loops nested in it: they count their own)."""
    pending = list(body)
    while pending:
        node = pending.pop()
        if isinstance(node, nodes.TemplateData):
            yield node
        elif not isinstance(node, nodes.For | nodes.Macro | nodes.CallBlock):
            pending.extend(node.iter_child_nodes())


def _replace_node(tree: nodes.Node, old: nodes.Node, new: nodes.Node) -> None:
    """Put ``new`` where ``old`` is in ``tree`` (Jinja nodes keep children in plain fields and lists)."""
    for parent in tree.find_all(nodes.Node):
        for field in parent.fields:
            child = getattr(parent, field, None)
            if child is old:
                setattr(parent, field, new)
                return
            if isinstance(child, list):
                for index, item in enumerate(child):
                    if item is old:
                        child[index] = new
                        return


@contextmanager
def render_budget(max_steps: int = MAX_STEPS, max_built: int = MAX_BUILT) -> Iterator[None]:
    """Give the renders inside the ``with`` block ``max_steps`` steps of loop iterations and calls, and
    ``max_built`` characters or items to build."""
    token = _ACTIVE_BUDGET.set(_Budget(max_steps, max_built, max_built))
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


@functools.lru_cache(maxsize=4096)
def expression_names(source: str) -> frozenset[str]:
    """The top-level variable names a Jinja expression reads (``order.status | lower`` → ``order``); empty when it
    does not parse (evaluating it reports the syntax error)."""
    try:
        tree = ChatopsSandbox().parse("{{ " + source + " }}")
    except TemplateSyntaxError:
        return frozenset()
    return frozenset(meta.find_undeclared_variables(tree))


def assignment_reads(assignments: Mapping[str, Any]) -> frozenset[str]:
    """The names a ``set:`` block's expressions read (a non-string value, a literal, reads none). The engine runs
    the providers among them before the stage's ``set:``, and lint counts the stage as running them."""
    return frozenset().union(*(expression_names(value) for value in assignments.values() if isinstance(value, str)))


def template_or_expression(source: str, *, label: str) -> InlineTemplate | Expression:
    """``source`` with ``{{ }}`` or ``{% %}`` is a template (its value is text); otherwise an expression (its value
    keeps its type). Both have ``value(variables)``; raises TemplateError on a syntax error."""
    if "{{" in source or "{%" in source:
        return InlineTemplate(source, label=label)
    return Expression(source, label=label)
