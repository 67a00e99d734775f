"""Child processes of a benchmark: servers on free loopback ports, timed commands, and their peak memory.

Every process is started in its own session (process group) and stopped with SIGTERM to the group, then SIGKILL
after a grace period, from a ``finally``/``with`` block: a benchmark that fails leaves nothing running.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def peak_rss_kib(pid: int) -> int | None:
    """The peak resident set size of a running process in KiB (``VmHWM`` of /proc/<pid>/status).

    psutil is not a dependency: Linux keeps the high-water mark itself, so reading it once, just before the process
    is stopped, gives the peak over its whole life. ``None`` when the process is gone or /proc is unavailable.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None


def http_get_status(port: int, path: str, *, timeout: float = 2.0) -> int | None:
    """The status of ``GET http://127.0.0.1:port/path``; ``None`` when nothing answers."""
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
        return True
    return False


class StartError(RuntimeError):
    """A server did not become ready; the message ends with the tail of its log."""


class ServerProcess:
    """A server started from ``command`` (which must listen on ``port``), ready when ``/healthz`` answers 200.

    ``ready_path=None`` waits for the TCP port instead (servers without a health route). Output goes to ``log``.
    Use as a context manager; ``peak_rss_kib`` is read just before the process is stopped.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready_path: str | None = "/healthz",
        start_timeout: float = 30.0,
    ) -> None:
        self.command = list(command)
        self.port = port
        self.log = log
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.ready_path = ready_path
        self.start_timeout = start_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.peak_rss_kib: int | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    def start(self) -> ServerProcess:
        """Start the process and wait (bounded by ``start_timeout``) until it is ready. Raises StartError."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise StartError(f"{self.command[0]} exited with {self.process.returncode}: {self.log_tail()}")
            ready = (
                http_get_status(self.port, self.ready_path, timeout=1.0) == 200
                if self.ready_path is not None
                else port_open(self.port)
            )
            if ready:
                return self
            time.sleep(0.1)
        self.stop()
        raise StartError(f"{' '.join(self.command)} not ready after {self.start_timeout:g} s: {self.log_tail()}")

    def current_rss_peak(self) -> int | None:
        """``VmHWM`` now (KiB)."""
        return peak_rss_kib(self.pid) if self.process is not None else None

    def stop(self, *, grace: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace`` seconds. Idempotent."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self.peak_rss_kib = peak_rss_kib(process.pid) or self.peak_rss_kib
            stop_group(process, grace=grace)
        self.process = None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def stop_group(process: subprocess.Popen[bytes], *, grace: float) -> None:
    """Stop ``process`` and its children (its own session): SIGTERM, then SIGKILL after ``grace`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
    # Children that ignored SIGTERM but outlived the leader.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(*servers: ServerProcess) -> Iterator[tuple[ServerProcess, ...]]:
    """Start ``servers`` in order and stop all of them (in reverse) however the block ends."""
    with contextlib.ExitStack() as stack:
        for server in servers:
            stack.enter_context(server)
        yield servers


def time_command(
    command: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 120.0,
    expect_exit: int | None = 0,
) -> float:
    """Wall-clock seconds for ``command`` to run to completion (output discarded).

    Raises RuntimeError (with the output's tail) when it exits with another code than ``expect_exit``.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(process, grace=2)
        raise RuntimeError(f"{' '.join(command)} did not finish within {timeout:g} s") from None
    elapsed = time.perf_counter() - started
    if expect_exit is not None and process.returncode != expect_exit:
        tail = "\n".join(output.decode(errors="replace").splitlines()[-10:])
        raise RuntimeError(f"{' '.join(command)} exited with {process.returncode}: {tail}")
    return elapsed
