"""Serve a WSGI app with waitress until SIGINT or SIGTERM, then shut down cleanly.

Shutdown order: stop accepting connections, let in-flight requests finish (waitress' task dispatcher), then run
the ``on_shutdown`` callbacks (workers finish their turns and release their leases).

Request bodies: waitress reads a whole body (into a temporary file past 512 KB) before the app sees it, so the
Flask limit (``MAX_CONTENT_LENGTH``) alone let a 900 MB upload fill the disk before its 413. waitress is given
twice the app's limit: a body declared larger is refused (plain-text 413, connection closed) as soon as its
headers arrive; a body between the limit and twice it is still read and answered with the app's JSON 413.
"""

from __future__ import annotations

import errno
import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ThreadedTaskDispatcher

from chatops.errors import ChatopsError

log = logging.getLogger(__name__)

WAITRESS_BODY_FACTOR = 2  # waitress refuses bodies this many times the app's limit without reading them
WAITRESS_DEFAULT_BODY_LIMIT = 1024**3  # waitress' own default (1 GB)


class _Stop(Exception):
    """Raised in the main thread by the signal handler to leave waitress' loop."""


def _bind(
    app: Any, *, host: str, port: int, threads: int, flags: tuple[str, str] = ("--host", "--port"), **adjustments: Any
) -> MultiSocketServer | BaseWSGIServer:
    """A waitress server listening on ``host:port`` (``adjustments``: more waitress settings).

    Raises ChatopsError saying why it cannot listen there (its hint names the options ``flags`` for host, port).
    """
    where = f"{host}:{port}"
    # Our own socket map and dispatcher: waitress leaves its sockets open and its threads running when it cannot
    # bind; with these the failure leaves nothing behind, and the request threads start once the port is ours.
    sockets: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    try:
        server = create_server(
            app, map=sockets, _dispatcher=dispatcher, host=host, port=port, ident="chatops", **adjustments
        )
    except (ValueError, OSError) as exc:
        for leftover in list(sockets.values()):
            leftover.close()
        raise _bind_error(exc, host=host, where=where, flags=flags) from None
    dispatcher.set_thread_count(threads)
    return server


def check_bind(*, host: str, port: int) -> None:
    """Raise ChatopsError (as waitress' bind does) when ``host:port`` cannot be bound now.

    For servers that bind in code of their own (Gunicorn retries a refused bind for 5 s, then exits with a
    message of its own): the operator gets the same error and hint whichever server they chose.
    """
    where = f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise _bind_error(ValueError(host), host=host, where=where) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers do: TIME_WAIT is no conflict
        try:
            probe.bind(address)
        except OSError as exc:
            raise _bind_error(exc, host=host, where=where) from None


def _bind_error(
    exc: Exception, *, host: str, where: str, flags: tuple[str, str] = ("--host", "--port")
) -> ChatopsError:
    host_flag, port_flag = flags
    if isinstance(exc, ValueError):  # waitress' "Invalid host/port specified.": the name does not resolve
        return ChatopsError(
            f"cannot listen on {where}: the host {host!r} does not resolve to an address of this machine",
            hint=f"use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface) with {host_flag}",
        )
    code = getattr(exc, "errno", None)
    if code == errno.EADDRINUSE:
        return ChatopsError(
            f"cannot listen on {where}: the port is already in use",
            hint=f"stop the other server, or choose another port with {port_flag} (0 picks a free one)",
        )
    if code == errno.EADDRNOTAVAIL:
        return ChatopsError(
            f"cannot listen on {where}: no network interface of this machine has the address {host}",
            hint=f"use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface) with {host_flag}",
        )
    if code == errno.EACCES:
        return ChatopsError(
            f"cannot listen on {where}: permission denied",
            hint="ports below 1024 need privileges: use --port 8000 behind a reverse proxy",
        )
    return ChatopsError(f"cannot listen on {where}: {getattr(exc, 'strerror', None) or exc}")


@dataclass
class ThreadedServer:
    """A waitress server answering from threads of its own (:func:`listen_in_thread`), beside the main work."""

    host: str
    port: int
    server: MultiSocketServer | BaseWSGIServer

    def close(self) -> None:
        """Stop listening; requests in flight get a second to finish (the threads are daemons)."""
        self.server.close()
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=1)


def listen_in_thread(app: Any, *, host: str, port: int, threads: int = 2) -> ThreadedServer:
    """Serve ``app`` on ``host:port`` from a daemon thread (``chatops worker``'s metrics listener).

    Raises ChatopsError saying why it cannot listen there.
    """
    server = _bind(app, host=host, port=port, threads=threads, flags=("--metrics-host", "--metrics-port"))
    thread = threading.Thread(target=server.run, name="chatops-metrics-listener", daemon=True)
    thread.start()
    return ThreadedServer(*_address(server), server)


def _address(server: MultiSocketServer | BaseWSGIServer) -> tuple[str, int]:
    """Where ``server`` listens: the first address of a host name that resolves to several (``localhost`` to
    127.0.0.1 and ::1: waitress then listens on each, through a MultiSocketServer)."""
    if isinstance(server, MultiSocketServer):
        host, port = server.effective_listen[0][:2]
        return str(host), int(port)
    return str(server.effective_host), int(server.effective_port)  # type: ignore[attr-defined]  # set by bind


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    threads: int,
    on_ready: Callable[[str, int], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` with ``threads`` request threads until a signal arrives.

    A Flask ``app`` with ``MAX_CONTENT_LENGTH`` also bounds what waitress reads (see the module docstring).
    """
    # waitress warns "Task queue depth is N" for every request queued behind busy threads: under a burst that is
    # one line per request, which floods the log without saying anything /metrics and latency do not.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = _bind(app, host=host, port=port, threads=threads, max_request_body_size=_body_limit(app))
    bound_host, bound_port = _address(server)
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("received %s, shutting down", signal.Signals(signum).name)
            raise _Stop

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready is not None:
            on_ready(bound_host, bound_port)
        server.run()
    except _Stop:
        pass
    finally:
        server.close()  # stop accepting
        server.task_dispatcher.shutdown(cancel_pending=False, timeout=10)  # in-flight requests finish
        if on_shutdown is not None:
            on_shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _body_limit(app: Any) -> int:
    """waitress' ``max_request_body_size`` for ``app`` (waitress' own 1 GB default for an app with no limit)."""
    limit = getattr(app, "config", {}).get("MAX_CONTENT_LENGTH")
    if not limit:
        return WAITRESS_DEFAULT_BODY_LIMIT
    # waitress refuses a body of max_request_body_size bytes or more, hence the + 1.
    return int(limit) * WAITRESS_BODY_FACTOR + 1
