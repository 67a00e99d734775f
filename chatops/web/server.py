"""Serve a WSGI app with waitress until SIGINT or SIGTERM, then shut down cleanly.

Shutdown order: stop accepting connections, let in-flight requests finish (waitress' task dispatcher), then run
the ``on_shutdown`` callbacks (workers finish their turns and release their leases).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from waitress.server import create_server

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised in the main thread by the signal handler to leave waitress' loop."""


def run_server(
    app: Any,
    *,
    host: str,
    port: int,
    threads: int,
    on_ready: Callable[[str, int], None] | None = None,
    on_shutdown: Callable[[], None] | None = None,
) -> None:
    """Serve ``app`` on ``host:port`` with ``threads`` request threads until a signal arrives."""
    # waitress warns "Task queue depth is N" for every request queued behind busy threads: under a burst that is
    # one line per request, which floods the log without saying anything /metrics and latency do not.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app, host=host, port=port, threads=threads, ident="chatops")
    bound_host, bound_port = server.effective_host, server.effective_port  # type: ignore[union-attr]
    stopping = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("received %s, shutting down", signal.Signals(signum).name)
            raise _Stop

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if on_ready is not None:
            on_ready(str(bound_host), int(bound_port))
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
