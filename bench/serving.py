"""Starting ``chatops serve`` for a benchmark: a fresh migrated database, the settings, a free port.

The WhatsApp channel is configured with the benchmark's app secret (bench.payloads signs with it), dummy tokens,
and ``CHATOPS_GRAPH_API_URL`` pointing at a loopback fake; nothing leaves the machine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from bench.databases import migrate, postgres_database, sqlite_database
from bench.harness import Context
from bench.payloads import APP_SECRET
from bench.processes import ServerProcess, free_port


def serve_env(
    ctx: Context, *, database_url: str, stages: Path, graph_api_url: str, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a benchmark ``chatops serve``."""
    return ctx.env(
        {
            "CHATOPS_DATABASE_URL": database_url,
            "CHATOPS_STAGES": str(stages),
            "CHATOPS_WHATSAPP_APP_SECRET": APP_SECRET,
            "CHATOPS_WHATSAPP_VERIFY_TOKEN": "x",
            "CHATOPS_WHATSAPP_ACCESS_TOKEN": "x",
            "CHATOPS_GRAPH_API_URL": graph_api_url,
            "NO_COLOR": "1",
            **(extra or {}),
        }
    )


@contextmanager
def fresh_database(ctx: Context, backend: str) -> Iterator[str]:
    """A new database of ``backend`` (``postgresql`` or ``sqlite``), migrated with ``chatops migrate``.

    Raises Skip (from bench.databases) when PostgreSQL is unreachable.
    """
    if backend == "postgresql":
        with postgres_database(ctx.database_server) as url:
            migrate(ctx.chatops, url, cwd=ctx.work_dir)
            yield url
    else:
        url = sqlite_database(ctx.work_dir)
        migrate(ctx.chatops, url, cwd=ctx.work_dir)
        yield url


def chatops_server(
    ctx: Context,
    *,
    options: Sequence[str],
    database_url: str,
    stages: Path,
    graph_api_url: str,
    log_name: str,
    extra_env: dict[str, str] | None = None,
) -> ServerProcess:
    """``chatops serve <options> --port <free>`` (not started: use it as a context manager)."""
    port = free_port()
    return ServerProcess(
        [*ctx.chatops, "serve", *options, "--port", str(port)],
        port=port,
        log=ctx.work_dir / "logs" / f"{log_name}.log",
        env=serve_env(ctx, database_url=database_url, stages=stages, graph_api_url=graph_api_url, extra=extra_env),
        cwd=stages.parent,
        start_timeout=60,
    )
