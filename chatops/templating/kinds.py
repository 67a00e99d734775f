"""The configurable provider kinds of stages.yaml: ``http`` (a JSON API), ``sql`` (a query), ``lookup`` (a table).

Each renders its inputs (URL, query parameters, lookup key) in the template sandbox from the static variables, the
built-in namespaces (``user``, ``conversation``, ``clock``, ``message``) and ``state`` (the conversation's memory,
``ProviderContext.state``); other providers' values are not inputs, since all providers of a turn run at the same
time. ``${NAME}`` in an http URL or header, or in a
database URL, is replaced by the environment variable NAME when the provider is built, so secrets stay out of
stages.yaml.
"""

from __future__ import annotations

import csv
import math
import os
import re
import time
from collections.abc import Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import sqlalchemy
import yaml
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

from chatops.errors import BotDefinitionError, ProviderError
from chatops.templating.builtin import builtin_variables
from chatops.templating.sandbox import Expression, InlineTemplate, template_or_expression

if TYPE_CHECKING:
    from chatops.templating.providers import ProviderContext, ProviderSpecLike

HTTP_METHODS = ("GET", "POST")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_RETRY_BACKOFF = 0.05  # seconds before the first retry, doubled each time; always within the provider's timeout


def _option(spec: ProviderSpecLike, key: str, example: str) -> Any:
    value = spec.options.get(key)
    if value is None or value == "":
        raise BotDefinitionError(
            f"provider {spec.name!r} (use: {spec.use}) needs the option {key!r}", hint=f"e.g. {key}: {example}"
        )
    return value


def _check_options(spec: ProviderSpecLike, allowed: Sequence[str]) -> None:
    unknown = sorted(set(spec.options) - set(allowed))
    if unknown:
        raise BotDefinitionError(
            f"provider {spec.name!r} (use: {spec.use}): unknown option {unknown[0]!r}",
            hint=f"{spec.use} providers accept: {', '.join(allowed)}",
        )


def _from_environment(text: str, *, where: str) -> str:
    """Replace ``${NAME}`` with the environment variable NAME; raises BotDefinitionError when it is not set."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name not in os.environ:
            raise BotDefinitionError(
                f"{where} uses ${{{name}}}, but the environment variable {name} is not set",
                hint=f"export {name}=… (or put it in .env)",
            )
        return os.environ[name]

    return _ENV_REFERENCE.sub(value, text)


def _url_quoted(value: Any) -> str:
    # Every {{ }} in a URL template is one path segment or query value: "/" and "&" typed by a user stay data.
    quoted = quote(str(value), safe="")
    if quoted and not quoted.strip("."):
        # "." and ".." are dot segments: httpx (like any URL resolver) would remove them and move the path up.
        # Encoding every dot of an all-dot value also covers two values side by side ("{{ a }}{{ b }}").
        return quoted.replace(".", "%2E")
    return quoted


def _without_query(url: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # user info may hold a password
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class HttpProvider:
    """GET (or POST) a URL rendered from the context and expose the keys of the JSON object it answers.

    The URL, header values and body strings are templates; values inside ``{{ }}`` of the URL are URL-quoted. A
    ``body`` mapping is sent as JSON, a body string as text. Retries on 5xx, 429, timeouts and connection errors
    (``retries`` more attempts, short backoff), all within the provider's ``timeout``. Other 4xx statuses and
    answers that are not a JSON object fail at once. ``select`` (``data.order``) picks a nested object. A declared
    name missing from the object is an error, unless ``missing: none`` makes it None.
    """

    OPTIONS = ("url", "method", "headers", "body", "select", "missing")

    def __init__(
        self,
        *,
        name: str,
        provides: Sequence[str],
        url: InlineTemplate,
        client: httpx.Client,
        owns_client: bool,
        timeout: float,
        retries: int = 0,
        method: str = "GET",
        headers: Mapping[str, InlineTemplate] | None = None,
        body: InlineTemplate | Mapping[str, Any] | None = None,
        select: Sequence[str] = (),
        missing_ok: bool = False,
    ) -> None:
        self.name = name
        self.provides = dict.fromkeys(provides, "")
        self.url = url
        self.method = method
        self.headers = dict(headers or {})
        self.body = body
        self.timeout = timeout
        self.retries = retries
        self.select = tuple(select)
        self.missing_ok = missing_ok
        self._client = client
        self._owns_client = owns_client

    @classmethod
    def from_spec(cls, spec: ProviderSpecLike, *, client: httpx.Client | None, timeout: float) -> HttpProvider:
        """Build from a spec; raises BotDefinitionError for missing/bad options or unset ``${NAME}``."""
        _check_options(spec, cls.OPTIONS)
        where = f"provider {spec.name!r}"
        url_source = _from_environment(
            str(_option(spec, "url", "https://shop.example/orders/{{ user.id }}")), where=where
        )
        if not url_source.startswith(("http://", "https://")):
            raise BotDefinitionError(
                f"{where}: url must start with http:// or https:// (got {url_source!r})",
                hint="write the scheme and host literally; values inside {{ }} are URL-quoted",
            )
        method = str(spec.options.get("method", "GET")).upper()
        if method not in HTTP_METHODS:
            raise BotDefinitionError(f"{where}: method {method!r} not supported", hint="use GET or POST")
        headers = spec.options.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise BotDefinitionError(f"{where}: headers must be a mapping", hint="headers: {Accept: application/json}")
        missing = str(spec.options.get("missing", "error"))
        if missing not in ("error", "none"):
            raise BotDefinitionError(f"{where}: missing must be 'error' or 'none' (got {missing!r})")
        select = str(spec.options.get("select") or "")
        body = spec.options.get("body")
        if body is not None and method != "POST":
            raise BotDefinitionError(f"{where}: a body needs method: POST")
        if body is not None and not isinstance(body, str | Mapping):
            raise BotDefinitionError(f"{where}: body must be text or a mapping (sent as JSON)")
        return cls(
            name=spec.name,
            provides=spec.provides,
            url=InlineTemplate(url_source, label=f"{where} url", finalize=_url_quoted),
            client=client or httpx.Client(follow_redirects=True),
            owns_client=client is None,
            timeout=timeout,
            retries=spec.retries,
            method=method,
            headers={
                str(k): InlineTemplate(_from_environment(str(v), where=where), label=f"{where} header {k!r}")
                for k, v in headers.items()
            },
            body=_body_templates(body, where=where),
            select=[part for part in select.split(".") if part],
            missing_ok=missing == "none",
        )

    def request_url(self, context: ProviderContext) -> str:
        """The URL for this turn; raises TemplateError when it uses an undefined variable."""
        return self.url.render(builtin_variables(context))

    def request_body(self, context: ProviderContext) -> str | dict[str, Any] | None:
        """The body for this turn (text, a JSON object, or None); raises TemplateError like the URL."""
        if self.body is None:
            return None
        variables = builtin_variables(context)
        if isinstance(self.body, InlineTemplate):
            return self.body.render(variables)
        return {k: v.render(variables) if isinstance(v, InlineTemplate) else v for k, v in self.body.items()}

    def cache_key(self, context: ProviderContext) -> Hashable:
        return (self.method, self.request_url(context), repr(self.request_body(context)))

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        url = self.request_url(context)
        variables = builtin_variables(context)
        headers = {"Accept": "application/json", **{k: v.render(variables) for k, v in self.headers.items()}}
        body = self.request_body(context)
        content = body if isinstance(body, str) else None
        json_body = body if isinstance(body, dict) else None
        # Logs and errors show the host and the path *template*: the rendered path and query carry user data
        # (a phone number, a name, the text), and the query string may carry a key.
        shown = f"{self.method} {_without_query(self.url.source)}"
        deadline = time.monotonic() + self.timeout
        last_problem = "no attempt made"
        for attempt in range(self.retries + 1):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if attempt:
                pause = min(_RETRY_BACKOFF * 2 ** (attempt - 1), remaining / 2)
                time.sleep(pause)
                remaining -= pause
            try:
                response = self._client.request(
                    self.method, url, headers=headers, content=content, json=json_body, timeout=remaining
                )
            except httpx.TimeoutException:
                last_problem = "timed out"
                continue
            except httpx.TransportError as exc:
                last_problem = f"connection failed ({type(exc).__name__}: {exc})"
                continue
            if response.status_code >= 500 or response.status_code == 429:
                last_problem = f"answered HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise ProviderError(f"provider {self.name!r}: {shown} answered HTTP {response.status_code}")
            return self._values(response, shown)
        attempts = f"{attempt + 1} attempt{'s' if attempt else ''}"
        raise ProviderError(f"provider {self.name!r}: {shown} {last_problem} ({attempts})")

    def _values(self, response: httpx.Response, shown: str) -> Mapping[str, Any]:
        try:
            document: Any = response.json()
        except ValueError:
            raise ProviderError(f"provider {self.name!r}: {shown} did not answer JSON") from None
        for part in self.select:
            document = document.get(part) if isinstance(document, Mapping) else None
        if not isinstance(document, Mapping):
            at = f" at {'.'.join(self.select)!r}" if self.select else ""
            raise ProviderError(f"provider {self.name!r}: {shown} did not answer a JSON object{at}")
        if self.missing_ok:
            return {**dict.fromkeys(self.provides), **document}
        return document

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


def _body_templates(body: Any, *, where: str) -> InlineTemplate | dict[str, Any] | None:
    if body is None:
        return None
    if isinstance(body, str):
        return InlineTemplate(body, label=f"{where} body")
    return {
        str(k): InlineTemplate(v, label=f"{where} body {k!r}") if isinstance(v, str) else v for k, v in body.items()
    }


class SqlProvider:
    """Run a parameterised SELECT on ``database_url`` and expose the first row's columns (``result: row``, None
    for each name when there is no row) or a list of rows under the single declared name (``result: rows``).

    Parameters are bound by the database driver (``:name`` in the query), never pasted into the SQL text.

    The provider's ``timeout`` also holds inside the database, so a locked table or a runaway query frees the
    provider's thread instead of holding it: PostgreSQL gets ``SET LOCAL statement_timeout`` before each query
    (it also bounds waiting for locks, and works behind PgBouncer); SQLite gets the remaining time as its busy
    timeout and a progress handler that interrupts the query at the deadline. Connecting and waiting for a pooled
    connection are bounded by the timeout too.
    """

    OPTIONS = ("database_url", "query", "params", "result", "max_rows")

    def __init__(
        self,
        *,
        name: str,
        provides: Sequence[str],
        engine: Engine,
        query: sqlalchemy.TextClause,
        params: Mapping[str, Expression | InlineTemplate],
        many: bool = False,
        max_rows: int = 100,
        timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.provides = dict.fromkeys(provides, "")
        self.engine = engine
        self.query = query
        self.params = dict(params)
        self.many = many
        self.max_rows = max_rows
        self.timeout = timeout

    @classmethod
    def from_spec(cls, spec: ProviderSpecLike, *, base_dir: Path, timeout: float) -> SqlProvider:
        """Build from a spec: creates the engine (no connection yet); raises BotDefinitionError for bad options."""
        _check_options(spec, cls.OPTIONS)
        where = f"provider {spec.name!r}"
        url = _from_environment(str(_option(spec, "database_url", "sqlite:///shop.db")), where=where)
        query_text = str(_option(spec, "query", "SELECT status, eta FROM orders WHERE customer = :customer"))
        if not re.match(r"\s*(SELECT|WITH)\b", query_text, re.IGNORECASE):
            raise BotDefinitionError(
                f"{where}: the query must be a SELECT (or WITH … SELECT)",
                hint="providers only read; give the database user read-only rights too",
            )
        raw_params = spec.options.get("params") or {}
        if not isinstance(raw_params, Mapping):
            raise BotDefinitionError(f"{where}: params must be a mapping", hint="params: {customer: user.id}")
        query = sqlalchemy.text(query_text)
        bound = set(query.compile().params)
        for name in sorted(bound - set(raw_params)):
            raise BotDefinitionError(
                f"{where}: the query uses :{name}, but params has no {name!r}", hint=f"params: {{{name}: user.id}}"
            )
        for name in sorted(set(raw_params) - bound):
            raise BotDefinitionError(f"{where}: params has {name!r}, but the query has no :{name}")
        result = str(spec.options.get("result", "row"))
        if result not in ("row", "rows"):
            raise BotDefinitionError(f"{where}: result must be 'row' or 'rows' (got {result!r})")
        if result == "rows" and len(spec.provides) != 1:
            raise BotDefinitionError(
                f"{where}: result: rows gives one list, so provides must name exactly one variable",
                hint="provides: [orders]",
            )
        max_rows = int(spec.options.get("max_rows", 100))
        params = {
            str(name): template_or_expression(str(source), label=f"{where} param {name!r}")
            for name, source in raw_params.items()
        }
        return cls(
            name=spec.name,
            provides=spec.provides,
            engine=_engine(url, base_dir=base_dir, where=where, timeout=timeout),
            query=query,
            params=params,
            many=result == "rows",
            max_rows=max_rows,
            timeout=timeout,
        )

    def bound_values(self, context: ProviderContext) -> dict[str, Any]:
        """The query's parameters for this turn; raises TemplateError when an expression fails."""
        variables = builtin_variables(context)
        return {name: expression.value(variables) for name, expression in self.params.items()}

    def cache_key(self, context: ProviderContext) -> Hashable:
        return tuple(sorted((name, repr(value)) for name, value in self.bound_values(context).items()))

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        values = self.bound_values(context)
        deadline = time.monotonic() + self.timeout
        try:
            with self.engine.connect() as connection, _statement_deadline(connection, deadline):
                result = connection.execute(self.query, values).mappings()
                if self.many:
                    rows = [dict(row) for row in result.fetchmany(self.max_rows)]
                    return {next(iter(self.provides)): rows}
                row = result.first()
        except SQLAlchemyError as exc:
            reason = f"{type(exc).__name__}: {_first_line(exc)}"
            if _stopped_by_deadline(exc) or time.monotonic() >= deadline:
                raise ProviderError(
                    f"provider {self.name!r}: query did not finish within its timeout of {self.timeout:g} s ({reason})",
                    hint="a locked table or a slow query; raise the provider's timeout only if the query needs it",
                ) from None
            raise ProviderError(f"provider {self.name!r}: query failed: {reason}") from None
        return dict.fromkeys(self.provides) if row is None else dict(row)

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def _statement_deadline(connection: Connection, deadline: float) -> Iterator[None]:
    """Make the database itself give up on the next statement at ``deadline`` (time.monotonic())."""
    backend = connection.dialect.name
    remaining_ms = max(1, int((deadline - time.monotonic()) * 1000))  # 0 would mean "no limit" to both
    if backend == "postgresql":
        # LOCAL: only this transaction (rolled back when the connection goes back to the pool).
        connection.exec_driver_sql(f"SET LOCAL statement_timeout = {remaining_ms}")
        yield
        return
    if backend != "sqlite":
        yield  # other databases: only the runner's timeout around the call applies
        return
    raw: Any = connection.connection.driver_connection  # sqlite3.Connection
    connection.exec_driver_sql(f"PRAGMA busy_timeout = {remaining_ms}")
    # Called every 1,000 virtual machine instructions; a true result interrupts the query ("interrupted").
    raw.set_progress_handler(lambda: time.monotonic() >= deadline, 1000)
    try:
        yield
    finally:
        raw.set_progress_handler(None, 0)  # the connection goes back to the pool


def _stopped_by_deadline(exc: SQLAlchemyError) -> bool:
    """Whether the database stopped the statement because of :func:`_statement_deadline`."""
    original = getattr(exc, "orig", None)
    if getattr(original, "pgcode", None) == "57014":  # query_canceled: statement_timeout
        return True
    return str(original) in ("interrupted", "database is locked")


def _first_line(exc: SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    return (str(original).strip().splitlines() or [type(original).__name__])[0]


def _engine(url: str, *, base_dir: Path, where: str, timeout: float) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise BotDefinitionError(
            f"{where}: database_url is not a database URL: {exc}", hint="e.g. sqlite:///shop.db"
        ) from None
    options: dict[str, Any] = {"pool_timeout": timeout}  # waiting for a pooled connection
    if parsed.drivername in ("postgres", "postgresql"):
        # SQLAlchemy 2.1 made psycopg (3) the default driver; chatops installs psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "postgresql":
        options["connect_args"] = {"connect_timeout": max(2, math.ceil(timeout))}  # libpq's minimum is 2 s
    database = parsed.database
    on_disk = parsed.get_backend_name() == "sqlite" and database and database != ":memory:"
    if on_disk and database and not database.startswith("file:") and not Path(database).is_absolute():
        parsed = parsed.set(database=str(base_dir / database))  # relative to stages.yaml, like lookup files
    try:
        return sqlalchemy.create_engine(parsed, **options)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise BotDefinitionError(
            f"{where}: cannot use database_url ({parsed.render_as_string(hide_password=True)}): {exc}",
            hint="check the scheme (sqlite:///…, postgresql://…) and that its driver is installed",
        ) from None


class LookupProvider:
    """Look a rendered key up in a table loaded once from a YAML mapping or a CSV file.

    Keys are compared as trimmed text, case-insensitively unless ``case_sensitive: true``. A key not in the table
    gives the ``default`` entry, or None for every declared name.
    """

    OPTIONS = ("file", "key", "key_column", "case_sensitive", "default")

    def __init__(
        self,
        *,
        name: str,
        provides: Sequence[str],
        table: Mapping[str, Mapping[str, Any]],
        key: Expression | InlineTemplate,
        case_sensitive: bool = False,
        default: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.provides = dict.fromkeys(provides, "")
        self.key = key
        self.case_sensitive = case_sensitive
        self.table = {self._normalise(k): v for k, v in table.items()}
        self.default = dict(default or {})

    @classmethod
    def from_spec(cls, spec: ProviderSpecLike, *, base_dir: Path) -> LookupProvider:
        """Build from a spec: reads the file; raises BotDefinitionError for bad options or a bad file."""
        _check_options(spec, cls.OPTIONS)
        where = f"provider {spec.name!r}"
        path = base_dir / str(_option(spec, "file", "stores.yaml"))
        key = template_or_expression(str(_option(spec, "key", "message.text")), label=f"{where} key")
        if not path.is_file():
            raise BotDefinitionError(
                f"{where}: lookup file {path} not found", hint="the path is relative to stages.yaml"
            )
        provides = list(spec.provides)
        if path.suffix.lower() in (".yaml", ".yml"):
            table = _yaml_table(path, provides, where=where)
        elif path.suffix.lower() == ".csv":
            table = _csv_table(path, provides, spec.options.get("key_column"), where=where)
        else:
            raise BotDefinitionError(f"{where}: lookup file {path} is neither YAML nor CSV", hint="use .yaml or .csv")
        default = spec.options.get("default")
        if default is not None and not isinstance(default, Mapping):
            raise BotDefinitionError(f"{where}: default must be a mapping of the provided names")
        return cls(
            name=spec.name,
            provides=provides,
            table=table,
            key=key,
            case_sensitive=bool(spec.options.get("case_sensitive", False)),
            default=default,
        )

    def _normalise(self, key: Any) -> str:
        text = str(key).strip()
        return text if self.case_sensitive else text.casefold()

    def lookup_key(self, context: ProviderContext) -> str:
        """The normalised key for this turn; raises TemplateError when the expression fails."""
        return self._normalise(self.key.value(builtin_variables(context)))

    def cache_key(self, context: ProviderContext) -> Hashable:
        return self.lookup_key(context)

    def fetch(self, context: ProviderContext) -> Mapping[str, Any]:
        entry = self.table.get(self.lookup_key(context), self.default)
        return {name: entry.get(name) for name in self.provides}


def _yaml_table(path: Path, provides: list[str], *, where: str) -> dict[str, Mapping[str, Any]]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BotDefinitionError(f"{where}: {path} is not valid YAML: {exc}") from None
    if not isinstance(document, Mapping):
        raise BotDefinitionError(
            f"{where}: {path} must be a mapping of key -> values", hint="berlin: {store: Mitte, phone: '030 1234'}"
        )
    table: dict[str, Mapping[str, Any]] = {}
    for key, entry in document.items():
        if isinstance(entry, Mapping):
            table[str(key)] = entry
        elif len(provides) == 1:  # a plain key -> value table for a provider of one name
            table[str(key)] = {provides[0]: entry}
        else:
            raise BotDefinitionError(
                f"{where}: {path}: entry {key!r} must be a mapping of {', '.join(provides)}",
                hint=f"{key}: {{{provides[0]}: …}}",
            )
    return table


def _csv_table(path: Path, provides: list[str], key_column: Any, *, where: str) -> dict[str, Mapping[str, Any]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = list(reader.fieldnames or [])
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise BotDefinitionError(f"{where}: cannot read {path} as CSV: {exc}") from None
    if not columns:
        raise BotDefinitionError(f"{where}: {path} has no header row", hint="the first row names the columns")
    key_name = str(key_column) if key_column else columns[0]
    for needed in [key_name, *provides]:
        if needed not in columns:
            raise BotDefinitionError(
                f"{where}: {path} has no column {needed!r}", hint=f"its columns are: {', '.join(columns)}"
            )
    return {str(row[key_name]): row for row in rows}
