"""A loopback TCP proxy that can be switched off and on, to take a database server away from a running process.

``stop()`` closes the listening socket and every proxied connection (both sides), so the client sees exactly
what it sees when its database server goes down: open connections break and new ones are refused. ``start()``
listens again on the same port and forwards to the same target::

    with TCPProxy("127.0.0.1", 5432) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
        ...
        proxy.stop()   # outage
        proxy.start()  # back
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

_ACCEPT_POLL_SECONDS = 0.05  # how often the accept loop checks that it should stop
_CHUNK = 65536


class TCPProxy:
    """Forwards connections accepted on 127.0.0.1 (``port`` 0: a free port, kept across restarts) to a target."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = port
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return self._listener is not None

    def start(self) -> TCPProxy:
        """Listen (again) on ``port`` and forward every new connection to the target."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The closed connections of a previous run sit in TIME_WAIT on this port; rebinding must not fail.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(_ACCEPT_POLL_SECONDS)
        self.port = listener.getsockname()[1]
        self._stopping = threading.Event()
        self._listener = listener
        self._spawn(self._accept_loop, listener, self._stopping)
        return self

    def stop(self) -> None:
        """Stop listening and cut every connection, client and server side; returns when all threads ended."""
        listener, self._listener = self._listener, None
        self._stopping.set()
        if listener is not None:
            listener.close()
        with self._lock:
            sockets, self._sockets = list(self._sockets), set()
            threads, self._threads = list(self._threads), []
        for sock in sockets:
            _close(sock)
        for thread in threads:
            thread.join(timeout=5)

    def __enter__(self) -> TCPProxy:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _spawn(self, target: object, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True, name="tcp-proxy")  # type: ignore[arg-type]
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _accept_loop(self, listener: socket.socket, stopping: threading.Event) -> None:
        while not stopping.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # the listener was closed by stop()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if stopping.is_set():
                    _close(client)
                    _close(upstream)
                    return
                self._sockets.update((client, upstream))
            self._spawn(self._pump, client, upstream)
            self._spawn(self._pump, upstream, client)

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass  # a side closed: the finally below ends the other
        finally:  # one side ended: end the other too, as a dead server would
            _close(source)
            _close(sink)
            with self._lock:
                self._sockets.discard(source)
                self._sockets.discard(sink)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on this socket
    sock.close()
