"""Variable providers: where the values a template renders come from, and how a turn fetches them.

Templates see the static ``variables`` of stages.yaml at the top level, and one namespace per provider:
``{{ user.name }}``, ``{{ clock.weekday }}``, ``{{ order.status }}``. The built-in providers (``user``,
``conversation``, ``clock``, ``message``, see ``builtin.py``) and the static variables are always present. Declared
providers (``http``, ``sql``, ``lookup``, or Python code, see ``kinds.py``) are built once by
:func:`build_providers` and run by a :class:`ProviderRunner` for each turn: concurrently, each within its timeout,
optionally cached for ``cache_ttl`` seconds. A provider that fails or times out never raises out of
:meth:`ProviderRunner.fetch_variables`: it is listed in ``FetchResult.errors`` (and its namespace is absent), so the
engine can answer with the stage's ``on_error`` template.
"""

from __future__ import annotations

import copy
import json
import keyword
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import httpx

from chatops.config.schedule import BusinessHours
from chatops.errors import BotDefinitionError, ChatopsError, ProviderError, TemplateError
from chatops.templating import kinds, plugins
from chatops.templating.builtin import BUILTIN_NAMES, BUILTIN_PROVIDERS
from chatops.templating.sandbox import Namespace

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0  # seconds, when a provider declares none
BUILTIN_KINDS = ("http", "sql", "lookup")
# Names a provider may not take: the built-ins, and Jinja's own globals it would hide.
RESERVED_NAMES = BUILTIN_NAMES | {"range", "dict", "lipsum", "cycler", "joiner", "namespace", "loop", "self"}


@dataclass(frozen=True)
class UserInfo:
    """Who the bot is talking to. ``id`` and ``phone`` are full (WhatsApp: the number); templates see both masked
    unless ``reveal_phone`` (the stage's ``reveal_phone: true``)."""

    id: str
    channel: str
    name: str | None = None
    phone: str | None = None
    reveal_phone: bool = False


@dataclass(frozen=True)
class ConversationInfo:
    """The conversation at the start of the turn; ``last_messages`` holds ``{direction, text, at}`` mappings."""

    id: str | int | None = None
    stage: str | None = None
    turn_count: int = 0
    started_at: datetime | None = None
    last_messages: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ProviderContext:
    """Everything a provider may read for one turn.

    ``message`` is :func:`chatops.templating.builtin.message_variables` of the inbound message; ``now`` comes from
    the engine's injected clock (aware); ``timezone`` and ``business_hours`` (e.g. ``"Mon-Fri 09:00-17:00"``) are
    the bot's; ``static`` holds the static ``variables`` of stages.yaml. ``state`` is the conversation's memory as
    the stage answering this turn sees it: after the target stage's ``clear:``, the transition's ``set:`` and the
    form's validated ``extract:`` fields, before the stage's own ``set:`` (which may read the providers' values).
    It is a read-only copy without the engine's ``_`` names.
    """

    user: UserInfo
    conversation: ConversationInfo
    now: datetime
    message: Mapping[str, Any] = field(default_factory=dict)
    timezone: str = "UTC"
    business_hours: str | BusinessHours | None = None
    static: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.now.tzinfo is None or self.now.utcoffset() is None:
            raise ValueError("ProviderContext.now must be timezone-aware (inject a clock returning aware datetimes)")
        # A copy no provider can change: providers of one turn run at the same time, in threads.
        object.__setattr__(self, "state", MappingProxyType(copy.deepcopy(dict(self.state))))


class VariableProvider(Protocol):
    """A source of template variables: ``provides`` maps each name to its help text, ``fetch`` returns values.

    ``fetch`` may block (network, database); it runs in a worker thread with a timeout. It raises
    ProviderError (or anything else) to report a failure. A provider may also define
    ``cache_key(context) -> Hashable``: the inputs its result depends on, used by the TTL cache.
    """

    @property
    def name(self) -> str: ...

    @property
    def provides(self) -> Mapping[str, str]: ...

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]: ...


class ProviderSpecLike(Protocol):
    """What :func:`build_providers` reads from one ``providers:`` entry of stages.yaml (chatops.config.bot)."""

    @property
    def name(self) -> str: ...

    @property
    def use(self) -> str: ...

    @property
    def provides(self) -> Sequence[str]: ...

    @property
    def help(self) -> Mapping[str, str]: ...

    @property
    def timeout(self) -> float | timedelta | None: ...

    @property
    def cache_ttl(self) -> float | timedelta | None: ...

    @property
    def retries(self) -> int: ...

    @property
    def options(self) -> Mapping[str, Any]: ...


@dataclass(frozen=True)
class ConfiguredProvider:
    """A declared provider with its limits. ``fetch`` returns exactly the declared names: a missing one is a
    ProviderError (the source changed shape), extra ones are dropped (templates see what lint checks)."""

    provider: VariableProvider
    name: str
    provides: Mapping[str, str]
    timeout: float = DEFAULT_TIMEOUT
    cache_ttl: float | None = None

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        values = self.provider.fetch(context)
        if not isinstance(values, Mapping):
            raise ProviderError(f"provider {self.name!r} returned {type(values).__name__}, not a mapping")
        missing = [name for name in self.provides if name not in values]
        if missing:
            raise ProviderError(
                f"provider {self.name!r} did not provide {', '.join(map(repr, missing))}",
                hint=f"it returned: {', '.join(map(str, values)) or 'nothing'}",
            )
        return {name: values[name] for name in self.provides}

    def cache_key(self, context: ProviderContext) -> Hashable:
        """The provider's own ``cache_key`` when it has one, else :func:`default_cache_key`."""
        return _cache_key(self.provider, context)

    def close(self) -> None:
        """Release the provider's connections (HTTP client, database pool), if it holds any."""
        close: Callable[[], None] | None = getattr(self.provider, "close", None)
        if close is not None:
            close()


@dataclass(frozen=True)
class ProviderFailure:
    """A provider that failed or timed out in a turn; ``error`` is the message recorded on the turn."""

    name: str
    error: str
    elapsed_ms: float
    timed_out: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "error": self.error, "elapsed_ms": self.elapsed_ms, "timed_out": self.timed_out}


@dataclass(frozen=True)
class FetchResult:
    """The variables of one turn, the providers that failed, and how long each provider took (ms)."""

    variables: dict[str, Any]
    errors: list[ProviderFailure] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    cached: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_json(self) -> dict[str, Any]:
        """The trace stored on the turn: errors, timings and cache hits (not the variables, see variables_json)."""
        return {"errors": [e.to_json() for e in self.errors], "timings_ms": self.timings, "cached": self.cached}


def variables_json(variables: Mapping[str, Any]) -> dict[str, Any]:
    """``variables`` as JSON-ready values (namespaces as objects, dates as ISO 8601, others as text)."""
    return {str(name): _jsonable(value) for name, value in variables.items()}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class ProviderRunner:
    """Runs providers for turns: a thread pool (so a slow provider cannot hold a turn past its timeout) and a TTL
    cache keyed on each provider's inputs. ``clock`` (seconds, monotonic) drives the TTL only, so tests can move it.

    Share one runner between turns and threads; ``close()`` it (or use ``with``) on shutdown.
    """

    def __init__(
        self,
        providers: Sequence[VariableProvider],
        *,
        max_workers: int = 16,
        clock: Callable[[], float] = time.monotonic,
        cache_size: int = 4096,
    ) -> None:
        self.providers = list(providers)
        self._clock = clock
        self._cache_size = cache_size
        self._cache: OrderedDict[tuple[str, Hashable], tuple[float, Mapping[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="chatops-provider")

    def __enter__(self) -> ProviderRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, *, close_providers: bool = True) -> None:
        """Stop the pool without waiting for providers still running; close the providers' connections too."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not close_providers:
            return
        for provider in self.providers:
            close: Callable[[], None] | None = getattr(provider, "close", None)
            if close is not None:
                close()

    def fetch_variables(self, context: ProviderContext, *, names: Collection[str] | None = None) -> FetchResult:
        """The turn's variables: static + built-ins + each provider in ``names`` (all when None).

        Never raises for a provider's failure: it is returned in ``errors`` and its namespace is left out.
        """
        variables: dict[str, Any] = dict(context.static)
        errors: list[ProviderFailure] = []
        timings: dict[str, float] = {}
        cached: list[str] = []
        for builtin in BUILTIN_PROVIDERS:  # pure functions of the context: no thread needed
            started = time.perf_counter()
            try:
                variables[builtin.name] = Namespace(builtin.name, builtin.fetch(context))
            except Exception as exc:  # a bad timezone must not stop the turn either
                errors.append(ProviderFailure(builtin.name, _describe(exc), _ms_since(started)))
        pending: list[tuple[VariableProvider, Hashable, float, float, Future[Mapping[str, Any]]]] = []
        for provider in self.providers:
            if names is not None and provider.name not in names:
                continue
            started = time.perf_counter()
            ttl, timeout = _limits(provider)
            try:
                key = _cache_key(provider, context) if ttl else None
                hit = self._cached(provider.name, key) if ttl else None
                if hit is None:
                    future = self._pool.submit(provider.fetch, context)
            except Exception as exc:  # inputs that do not render or hash, or a runner already closed
                errors.append(ProviderFailure(provider.name, _describe(exc), _ms_since(started)))
                continue
            if hit is not None:
                variables[provider.name] = Namespace(provider.name, hit)
                timings[provider.name] = 0.0
                cached.append(provider.name)
                continue
            pending.append((provider, key, started, started + timeout, future))
        for provider, key, started, deadline, future in sorted(pending, key=lambda item: item[3]):
            ttl, timeout = _limits(provider)
            try:
                values = future.result(timeout=max(0.0, deadline - time.perf_counter()))
            except FutureTimeoutError:
                future.cancel()
                if ttl:  # a late answer still warms the cache for the next turn
                    future.add_done_callback(self._remember_late(provider.name, key, ttl))
                message = f"provider {provider.name!r} timed out after {timeout:g} s"
                errors.append(ProviderFailure(provider.name, message, _ms_since(started), timed_out=True))
                log.warning("%s", message)
                continue
            except Exception as exc:  # the provider's own failure, whatever it is
                errors.append(ProviderFailure(provider.name, _describe(exc), _ms_since(started)))
                log.warning("provider %r failed: %s", provider.name, _describe(exc))
                continue
            timings[provider.name] = _ms_since(started)
            variables[provider.name] = Namespace(provider.name, values)
            if ttl:
                self._remember(provider.name, key, ttl, values)
        return FetchResult(variables=variables, errors=errors, timings=timings, cached=cached)

    def _cached(self, name: str, key: Hashable) -> Mapping[str, Any] | None:
        with self._lock:
            entry = self._cache.get((name, key))
            if entry is None:
                return None
            expires, values = entry
            if self._clock() >= expires:
                del self._cache[(name, key)]
                return None
            self._cache.move_to_end((name, key))
            return values

    def _remember(self, name: str, key: Hashable, ttl: float, values: Mapping[str, Any]) -> None:
        with self._lock:
            self._cache[(name, key)] = (self._clock() + ttl, values)
            self._cache.move_to_end((name, key))
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)

    def _remember_late(self, name: str, key: Hashable, ttl: float) -> Callable[[Future[Mapping[str, Any]]], None]:
        def remember(future: Future[Mapping[str, Any]]) -> None:
            if not future.cancelled() and future.exception() is None:
                self._remember(name, key, ttl, future.result())

        return remember


def fetch_variables(
    providers: Sequence[VariableProvider], context: ProviderContext, *, names: Collection[str] | None = None
) -> FetchResult:
    """One-off :meth:`ProviderRunner.fetch_variables` with a runner of its own (no cache survives the call).

    The engine keeps one ProviderRunner instead, so that caches and the thread pool live across turns.
    """
    runner = ProviderRunner(providers, max_workers=max(1, len(providers)))
    try:
        return runner.fetch_variables(context, names=names)
    finally:
        runner.close(close_providers=False)  # the providers belong to the caller


def _limits(provider: VariableProvider) -> tuple[float | None, float]:
    if isinstance(provider, ConfiguredProvider):
        return provider.cache_ttl, provider.timeout
    return None, DEFAULT_TIMEOUT


def _cache_key(provider: VariableProvider, context: ProviderContext) -> Hashable:
    key_of: Callable[[ProviderContext], Hashable] | None = getattr(provider, "cache_key", None)
    return key_of(context) if key_of is not None else default_cache_key(context)


def default_cache_key(context: ProviderContext) -> Hashable:
    """The cache key of a provider without ``cache_key``: the user and the conversation's state.

    Results are never shared by users, and a provider that reads ``context.state`` (an order number the bot was
    told) never gets the answer cached for another value. A provider whose result does not depend on the state
    caches better with a ``cache_key`` of its own.
    """
    state = json.dumps(context.state, sort_keys=True, ensure_ascii=False, default=_json_plain)
    return (context.user.channel, context.user.id, state)


def _json_plain(value: Any) -> Any:
    """``json.dumps``' fallback: a read-only mapping (the state is one) as a dict, so its keys are sorted too."""
    return dict(value) if isinstance(value, Mapping) else str(value)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ChatopsError):
        return f"{exc.message} (hint: {exc.hint})" if exc.hint else exc.message
    return f"{type(exc).__name__}: {exc}"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)


def seconds(value: float | timedelta | None, *, default: float | None) -> float | None:
    """A duration from the spec (seconds or timedelta) in seconds; None gives ``default``."""
    if value is None:
        return default
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


def build_providers(
    specs: Sequence[ProviderSpecLike], *, base_dir: Path, http: httpx.Client | None = None
) -> list[VariableProvider]:
    """Build the declared providers of stages.yaml once, at start-up.

    ``base_dir`` is the directory of stages.yaml (lookup files and relative SQLite paths are resolved against it);
    ``http`` is shared by every http provider (each makes its own client when None). Opens database engines and
    reads lookup files. Raises BotDefinitionError (with a hint) for an unknown kind, an unimportable path, a
    missing or bad option, a bad name, or a duplicate.
    """
    built: list[VariableProvider] = []
    seen: set[str] = set()
    for spec in specs:
        _check_name(spec, seen)
        seen.add(spec.name)
        timeout = seconds(spec.timeout, default=DEFAULT_TIMEOUT)
        ttl = seconds(spec.cache_ttl, default=None)
        if timeout is None or timeout <= 0:
            raise BotDefinitionError(f"provider {spec.name!r}: timeout must be positive", hint="e.g. timeout: 2s")
        if spec.retries < 0:
            raise BotDefinitionError(f"provider {spec.name!r}: retries must be 0 or more")
        for provided in spec.provides:
            if not provided.isidentifier() or keyword.iskeyword(provided):
                raise BotDefinitionError(
                    f"provider {spec.name!r}: {provided!r} is not a valid variable name",
                    hint="use letters, digits and underscores, not starting with a digit",
                )
        try:
            inner = _build_one(spec, base_dir=base_dir, http=http, timeout=timeout)
        except TemplateError as exc:  # a URL or key template that does not parse is a bot definition error
            raise BotDefinitionError(f"provider {spec.name!r}: {exc.message}", hint=exc.hint) from None
        provides = {name: spec.help.get(name, "") for name in spec.provides} or dict(inner.provides)
        if not provides:
            raise BotDefinitionError(
                f"provider {spec.name!r} provides nothing", hint="list the names it provides: provides: [status, eta]"
            )
        built.append(ConfiguredProvider(inner, spec.name, provides, timeout, ttl if ttl and ttl > 0 else None))
    return built


def _check_name(spec: ProviderSpecLike, seen: set[str]) -> None:
    if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
        raise BotDefinitionError(
            f"provider name {spec.name!r} is not a valid variable name",
            hint="templates use it as {{ name.value }}: letters, digits and underscores",
        )
    if spec.name in RESERVED_NAMES:
        raise BotDefinitionError(
            f"provider name {spec.name!r} is reserved", hint=f"reserved: {', '.join(sorted(RESERVED_NAMES))}"
        )
    if spec.name in seen:
        raise BotDefinitionError(f"provider {spec.name!r} is declared twice", hint="give each provider its own name")


def _build_one(
    spec: ProviderSpecLike, *, base_dir: Path, http: httpx.Client | None, timeout: float
) -> VariableProvider:
    if spec.use == "http":
        return kinds.HttpProvider.from_spec(spec, client=http, timeout=timeout)
    if spec.use == "sql":
        return kinds.SqlProvider.from_spec(spec, base_dir=base_dir, timeout=timeout)
    if spec.use == "lookup":
        return kinds.LookupProvider.from_spec(spec, base_dir=base_dir)
    return plugins.load_python_provider(spec, builtin_kinds=BUILTIN_KINDS, base_dir=base_dir)
