"""``chatops serve`` (webhooks + workers + sender) and ``chatops worker`` (workers + sender, no HTTP)."""

from __future__ import annotations

import signal
import threading
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any

import typer

from chatops.cli import output
from chatops.cli.choices import choice_metavar, choice_parser

SERVERS = ("waitress", "gunicorn", "granian")

# Request threads per web process. Fewer threads than the connections a proxy or Meta keeps open made waitress
# collapse (measured, 8 threads at 64 connections: 350-530 webhooks/s and 2-3.4 ms of CPU each, against 1,700
# and 0.7 ms with 32 threads; docs/scaling.md "Request threads"). A waiting webhook holds no database connection
# (one group-commit leader writes for all of them), so more threads cost no connections: see request_connections.
DEFAULT_THREADS = 32
# Request threads that may hold a database connection at the same time: the admin API, console and health routes
# hold one for their request; webhooks only through their one group-commit leader.
REQUEST_CONNECTIONS = 8

if TYPE_CHECKING:
    from pathlib import Path

    import sqlalchemy as sa

    from chatops.config.bot_schema import BotDefinition
    from chatops.config.settings import Settings


def serve_command(
    ctx: typer.Context,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port (0 picks a free one).", min=0, max=65535)] = 8000,
    threads: Annotated[
        int,
        typer.Option(
            "--threads",
            help="Request threads (per web process with gunicorn and granian): at least the concurrent connections.",
            min=1,
        ),
    ] = DEFAULT_THREADS,
    server: Annotated[
        str,
        typer.Option(
            "--server",
            help="waitress: one process, any OS. gunicorn: --processes web processes (Unix). granian: --processes "
            "web processes on a Rust HTTP server (least CPU per request).",
            parser=choice_parser(SERVERS),
            metavar=choice_metavar(SERVERS),
        ),
    ] = "waitress",
    processes: Annotated[
        int, typer.Option("--processes", help="Web processes (--server gunicorn or granian).", min=1)
    ] = 2,
    workers: Annotated[int, typer.Option("--workers", help="In-process inbox workers.", min=1)] = 4,
    no_workers: Annotated[
        bool, typer.Option("--no-workers", help="Only receive webhooks; run `chatops worker` elsewhere.")
    ] = False,
    migrate: Annotated[bool, typer.Option("--migrate", help="Apply pending migrations before starting.")] = False,
    insecure_skip_signature: Annotated[
        bool,
        typer.Option("--insecure-skip-signature", help="Accept unsigned webhooks. Development only."),
    ] = False,
) -> None:
    """Receive webhooks, answer through the bot, send replies.

    Example: CHATOPS_DATABASE_URL=postgresql://chatops@db/chatops chatops serve --server granian --processes 2
    """
    from chatops.cli.app import settings_from
    from chatops.web.app import create_app
    from chatops.web.server import run_server

    settings = settings_from(ctx)
    _check_channels(settings, insecure_skip_signature=insecure_skip_signature)
    if server == "gunicorn":
        _serve_gunicorn(
            settings,
            host=host,
            port=port,
            processes=processes,
            threads=threads,
            workers=None if no_workers else workers,
            migrate=migrate,
            insecure_skip_signature=insecure_skip_signature,
        )
        return
    if server == "granian":
        _serve_granian(
            settings,
            host=host,
            port=port,
            processes=processes,
            threads=threads,
            workers=None if no_workers else workers,
            migrate=migrate,
            insecure_skip_signature=insecure_skip_signature,
        )
        return
    bot, db = _prepare(settings, pool_size=request_connections(threads) + workers + 4, migrate=migrate)
    app = create_app(settings, bot, db=db, insecure_skip_signature=insecure_skip_signature)
    background = None if no_workers else _background(settings, bot, db, workers=workers, app=app)

    def ready(bound_host: str, bound_port: int) -> None:
        # Workers start once the port is ours: a server that cannot listen must not take conversations first.
        if background is not None:
            background.start()
        _banner(settings, bot, db, base=f"http://{bound_host}:{bound_port}", workers=0 if no_workers else workers)

    def shutdown() -> None:
        if background is not None:
            background.stop()
        db.dispose()

    run_server(app, host=host, port=port, threads=threads, on_ready=ready, on_shutdown=shutdown)


def _serve_gunicorn(
    settings: Settings,
    *,
    host: str,
    port: int,
    processes: int,
    threads: int,
    workers: int | None,
    migrate: bool,
    insecure_skip_signature: bool,
) -> None:
    """``serve --server gunicorn``: see chatops.web.gunicorn_server for the process model."""
    import os
    import shutil

    from chatops.errors import ChatopsError

    try:
        from chatops.web.gunicorn_server import background_supervisor, run_gunicorn
    except ImportError:  # Windows: Gunicorn is a Unix server and is not installed there
        raise ChatopsError(
            "Gunicorn is not installed (it runs on Unix only)", hint="use --server waitress (the default)"
        ) from None

    if "GUNICORN_FD" in os.environ:  # set by Gunicorn's binary upgrade (SIGUSR2), which re-executes this command
        raise ChatopsError(
            "SIGUSR2 (Gunicorn's binary upgrade) is not supported: the running server goes on unchanged",
            hint="reload the bot definition with SIGHUP; restart (systemctl restart chatops) for new code or settings",
        )
    bot, db = _prepare(settings, pool_size=1, migrate=migrate)
    db.dispose()  # the master keeps no connection: web processes are forked from it and open their own
    master = os.getpid()
    status_dir = _server_dir()  # before any web process is forked or the background process started
    status_path = status_dir / "background.json"
    background = None
    if workers is not None:
        from chatops.engine.background_process import Job

        background = background_supervisor(Job(settings=settings, workers=workers, status_path=status_path))

    def load_app() -> Any:  # in each web process, after the fork
        from chatops.web.wsgi import web_process_app

        return web_process_app(
            settings,
            pool_size=request_connections(threads) + 4,
            insecure_skip_signature=insecure_skip_signature,
            status_path=status_path if background is not None else None,
        )

    def ready(bound_host: str, bound_port: int) -> None:
        _banner(settings, bot, db, base=f"http://{bound_host}:{bound_port}", workers=workers or 0)
        output.info(f"  server:    gunicorn, {processes} processes × {threads} threads; SIGHUP reloads")

    try:
        run_gunicorn(
            load_app,
            host=host,
            port=port,
            processes=processes,
            threads=threads,
            log_level=settings.log_level,
            background=background,
            on_ready=ready,
            check_reload=partial(_reload_problem, settings),
        )
    finally:
        # Web processes are forks of this one and leave through this code too: only the master cleans up.
        if os.getpid() == master:
            shutil.rmtree(status_dir, ignore_errors=True)


def _serve_granian(
    settings: Settings,
    *,
    host: str,
    port: int,
    processes: int,
    threads: int,
    workers: int | None,
    migrate: bool,
    insecure_skip_signature: bool,
) -> None:
    """``serve --server granian``: see chatops.web.granian_server for the process model."""
    import shutil

    from chatops.errors import ChatopsError
    from chatops.web.server import check_bind

    try:
        from chatops.web.granian_server import Housekeeping, WebJob, run_granian
    except ImportError:  # a platform Granian publishes no wheel for, and no Rust toolchain to build one
        raise ChatopsError(
            "Granian is not installed (it ships as a compiled wheel, and none was installed for this platform)",
            hint="use --server waitress (the default), or install it with `pip install granian`",
        ) from None

    check_bind(host=host, port=port)  # before anything is set up: a port in use is the usual mistake
    status_dir = _server_dir()  # before any metric is made here or a web process is started
    try:
        status_path = status_dir / "background.json"
        bot, db = _prepare(settings, pool_size=(workers or 0) + 4, migrate=migrate)
        background = None
        if workers is not None:
            from chatops.engine.runtime import Background
            from chatops.metrics import Metrics
            from chatops.metrics.pool import export_pool
            from chatops.web.state import utc_now

            metrics = Metrics()
            export_pool(metrics, db)
            background = Background(settings, bot, db, workers=workers, clock=utc_now, metrics=metrics)
        else:
            db.dispose()  # the master keeps no connection: the web processes open their own
        housekeeping = Housekeeping(background, status_path)
        job = WebJob(
            settings=settings,
            threads=threads,
            pool_size=request_connections(threads) + 4,
            insecure_skip_signature=insecure_skip_signature,
            status_path=status_path if background is not None else None,
            ready_dir=status_dir,
        )

        def bound(_host: str, _port: int) -> None:
            # Workers start once the port is ours: a server that cannot listen must not take conversations first.
            if background is not None:
                background.start()
            housekeeping.start()

        def ready(bound_host: str, bound_port: int) -> None:
            _banner(settings, bot, db, base=f"http://{bound_host}:{bound_port}", workers=workers or 0)
            output.info(
                f"  server:    granian, {processes} processes × {threads} threads; SIGHUP restarts the web processes"
            )

        def shutdown() -> None:  # the web processes have stopped
            housekeeping.stop()
            if background is not None:
                background.stop()
            db.dispose()

        run_granian(
            job,
            host=host,
            port=port,
            processes=processes,
            log_level=settings.log_level,
            on_bound=bound,
            on_ready=ready,
            on_shutdown=shutdown,
            check_reload=partial(_reload_problem, settings),
        )
    finally:
        shutil.rmtree(status_dir, ignore_errors=True)


def worker_command(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option("--concurrency", help="Worker threads in this process.", min=1)] = 4,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            "--metrics-port",
            help="Serve GET /metrics on this port (0 picks a free one) [env: CHATOPS_WORKER_METRICS_PORT].",
            min=0,
            max=65535,
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str | None,
        typer.Option(
            "--metrics-host",
            help="Interface of the metrics listener [default: 127.0.0.1; env: CHATOPS_WORKER_METRICS_HOST].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Answer conversations and send replies without serving HTTP (scale out: many processes, one PostgreSQL).

    Example: chatops worker --concurrency 8 --metrics-port 9464
    """
    from chatops.cli.app import settings_from
    from chatops.engine.runtime import Background
    from chatops.metrics import Metrics
    from chatops.metrics.pool import export_pool
    from chatops.web.state import utc_now

    settings = settings_from(ctx, worker_metrics_port=metrics_port, worker_metrics_host=metrics_host)
    bot, db = _prepare(settings, pool_size=concurrency + 4, migrate=False)
    metrics = Metrics()
    export_pool(metrics, db)
    listener = None
    if settings.worker_metrics_port is not None:
        from chatops.web.metrics import metrics_app
        from chatops.web.server import listen_in_thread

        app = metrics_app(metrics, settings.metrics_token)
        try:
            listener = listen_in_thread(app, host=settings.worker_metrics_host, port=settings.worker_metrics_port)
        except BaseException:
            db.dispose()
            raise
    background = Background(settings, bot, db, workers=concurrency, clock=utc_now, metrics=metrics, command="worker")
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopped.set())
    try:
        background.start()  # InstanceInUseError: another live process holds this one's CHATOPS_INSTANCE
    except BaseException:
        background.stop()
        if listener is not None:
            listener.close()
        db.dispose()
        raise
    output.info(f"chatops worker: {concurrency} workers on {bot.bot.name!r}; Ctrl-C to stop", style="bold")
    if listener is not None:
        output.info(f"  metrics:   http://{_url_host(listener.host)}:{listener.port}/metrics")
    shown: list[str] = []
    while not stopped.wait(1.0):  # problems are said once, and again when they change: not every second
        problems = background.problems() + background.warnings()  # warnings too: no /readyz shows them here
        if problems != shown:
            for problem in problems:
                output.warning(problem)
            if not problems:
                output.info("no problems left: sending and answering as usual")
            shown = problems
    background.stop()
    if listener is not None:
        listener.close()
    db.dispose()


def _server_dir() -> Path:
    """A private directory (0700), new and empty for each run of a multi-process server: the background's status
    file, and the metrics of every process (prometheus_client's multiprocess mode, set up here: every process
    started after this records into it, and the ``/metrics`` of each web process sums them;
    docs/operations.md#which-process-exports-what). The caller removes it when the server stops."""
    import tempfile
    from pathlib import Path

    from chatops.metrics.multiprocess import use_multiprocess_dir

    status_dir = Path(tempfile.mkdtemp(prefix="chatops-serve-"))
    (status_dir / "metrics").mkdir()
    use_multiprocess_dir(status_dir / "metrics")
    return status_dir


def _reload_problem(settings: Settings) -> str | None:
    """Why a SIGHUP reload is refused: the bot definition on disk does not load (None when it does)."""
    from chatops.config.bot import load_bot
    from chatops.errors import ChatopsError

    try:
        load_bot(settings.stages, templates_dir=settings.templates)
    except ChatopsError as exc:
        return str(exc)
    return None


def request_connections(threads: int) -> int:
    """The database connections a web process keeps for ``threads`` request threads (its pool adds the workers'
    and 4 more, and may open as many again in a burst)."""
    return min(threads, REQUEST_CONNECTIONS)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check_channels(settings: Settings, *, insecure_skip_signature: bool) -> None:
    from chatops.config.settings import channel_credentials
    from chatops.errors import ConfigError

    for channel in ("whatsapp", "messenger"):
        credentials = channel_credentials(settings, channel)
        if credentials.enabled and not credentials.app_secret and not insecure_skip_signature:
            raise ConfigError(
                f"the {channel} channel has credentials but no app secret: webhooks cannot be verified",
                hint=f"set {credentials.variables[0]} (Meta app → Settings → Basic), or pass "
                "--insecure-skip-signature for local development only",
            )
    if insecure_skip_signature:
        output.warning("--insecure-skip-signature: webhook signatures are NOT checked. Never use this in production.")


def _prepare(settings: Settings, *, pool_size: int, migrate: bool) -> tuple[BotDefinition, sa.Engine]:
    """Load the bot, connect, and make sure the schema is at head (migrating when asked)."""
    from chatops.config.bot import load_bot
    from chatops.db.connect import check_connection, create_db_engine
    from chatops.db.migrate import ensure_schema_current
    from chatops.db.migrate import migrate as apply_migrations

    bot = load_bot(settings.stages, templates_dir=settings.templates)
    db = create_db_engine(settings.database_url, pool_size=pool_size)
    check_connection(db)
    if migrate:
        _, applied = apply_migrations(db)
        for revision in applied:
            output.info(f"Applied {revision.id}  {revision.message}", style="green")
    ensure_schema_current(db)
    return bot, db


def _background(settings: Settings, bot: BotDefinition, db: sa.Engine, *, workers: int, app: Any) -> Any:
    from chatops.engine.runtime import Background
    from chatops.web.state import utc_now, web_state

    state = web_state(app)
    background = Background(settings, bot, db, workers=workers, clock=utc_now, metrics=state.metrics)
    state.readiness_checks.append(background.problems)
    state.readiness_warnings.append(background.warnings)
    return background


def _banner(settings: Settings, bot: BotDefinition, db: sa.Engine, *, base: str, workers: int) -> None:
    from chatops.config.settings import channel_credentials, mask_url
    from chatops.db.connect import describe_database

    output.info(f"chatops serving {bot.bot.name!r} on {base}", style="bold")
    for channel in ("whatsapp", "messenger"):
        credentials = channel_credentials(settings, channel)
        if credentials.enabled:
            output.info(f"  {channel + ':':11}{base}/webhooks/{channel}")
        else:
            output.info(f"  {channel + ':':11}disabled (set {', '.join(credentials.variables)})", style="dim")
    output.info(f"  database:  {mask_url(settings.database_url)} ({describe_database(db)})")
    output.info(f"  AI:        {settings.ai_mode}")
    output.info(f"  workers:   {workers or 'none (--no-workers): run `chatops worker`'}")
    output.info(f"  health:    {base}/healthz  {base}/readyz  {base}/metrics")
