"""What the loopback fakes share: a threaded HTTP server on 127.0.0.1, recorded requests, scripted answers."""

from __future__ import annotations

import threading
from collections import deque
from http.server import ThreadingHTTPServer
from typing import Generic, Self, TypeVar

R = TypeVar("R")  # a recorded request
S = TypeVar("S")  # a scripted answer


class LoopbackFake(Generic[R, S]):
    """Start/stop (or a ``with`` block) a server in a daemon thread; ``requests`` and ``script(...)`` are thread-safe.

    Subclasses build ``self._server`` after calling ``__init__`` and answer from handler threads through
    :meth:`_record_and_next`.
    """

    thread_name = "fake-server"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: list[R] = []
        self._script: deque[S] = deque()
        self._stopping = threading.Event()  # set by stop(): wakes handlers sleeping in a scripted delay
        self._released = threading.Event()  # cleared by hold(): answers wait until release() (or stop())
        self._released.set()
        self._server: ThreadingHTTPServer
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def requests(self) -> list[R]:
        with self._lock:
            return list(self._requests)

    def script(self, *answers: S) -> None:
        """Answer the next requests with ``answers``, in order; the default answer comes after them."""
        with self._lock:
            self._script.extend(answers)

    def hold(self) -> None:
        """Keep every answer from now on (requests are recorded on arrival) until :meth:`release` or :meth:`stop`:
        calls in flight for as long as a test needs, whatever the load of the machine."""
        self._released.clear()

    def release(self) -> None:
        """Let the held answers (and the next ones) go."""
        self._released.set()

    def start(self) -> Self:
        # A short poll interval: stop() waits for the loop to notice, and tests stop a server each.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record_and_next(self, request: R) -> S | None:
        """Record ``request``; the next scripted answer, or None when the script is empty."""
        with self._lock:
            self._requests.append(request)
            return self._script.popleft() if self._script else None

    def _sleep(self, seconds: float) -> None:
        """Before an answer: wait ``seconds`` (a latency, a scripted delay), then while :meth:`hold` holds it."""
        if seconds > 0:
            self._stopping.wait(seconds)
        self._released.wait()
