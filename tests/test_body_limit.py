"""The request body limit under a real ``chatops serve`` process (waitress in front of Flask).

waitress buffers a whole request body before the app sees it, so the app's own limit alone let a 900 MB upload
be written to disk before its 413. These tests stream bodies to loopback and watch when the answer comes.
"""

from __future__ import annotations

import os
import select
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import ROOT
from tests.processes import ServeProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(60)]

LIMIT = 100_000  # CHATOPS_MAX_BODY_BYTES for these servers
STREAM_CAP = 64 * 1024 * 1024  # the most a test sends while waiting for the answer


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[], ServeProcess]]:
    """Starts ``chatops serve --migrate`` on a SQLite file with the example bot and LIMIT as the body cap."""
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    started: list[ServeProcess] = []

    def start() -> ServeProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
        env |= {
            "CHATOPS_DATABASE_URL": f"sqlite:///{tmp_path / 'chatops.db'}",
            "CHATOPS_WHATSAPP_APP_SECRET": "body-limit-secret",
            "CHATOPS_MAX_BODY_BYTES": str(LIMIT),
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
        }
        server = ServeProcess(tmp_path, env, name="serve", args=("--migrate",))
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.kill()


def stream_until_answered(url: str, *, declared: int) -> tuple[bytes, int, float]:
    """POST with ``Content-Length: declared`` and send body bytes until the server answers (or STREAM_CAP).

    Returns the first bytes of the answer (empty when none came), how many body bytes were sent, and the seconds
    from the end of the headers to the answer.
    """
    parts = urlsplit(url)
    chunk = b"x" * 65536
    sent = 0
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(
            b"POST /webhooks/whatsapp HTTP/1.1\r\nHost: chatops\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {declared}\r\n\r\n".encode()
        )
        started = time.monotonic()
        sock.setblocking(False)
        while sent < min(declared, STREAM_CAP):
            readable, writable, _ = select.select([sock], [sock], [], 5)
            if readable or not writable:
                break
            try:
                sent += sock.send(chunk)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:  # the server closed the connection: its answer is waiting
                break
        readable, _, _ = select.select([sock], [], [], 3)
        try:
            answer = sock.recv(4096) if readable else b""
        except OSError:
            answer = b""
        return answer, sent, time.monotonic() - started


def test_a_body_declared_huge_is_refused_before_it_is_read(serve: Callable[[], ServeProcess]) -> None:
    server = serve()
    answer, sent, seconds = stream_until_answered(server.url, declared=900_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), f"no 413 after {sent} bytes: {answer[:200]!r}\n{server.tail()}"
    # Refused on its headers: the server read (and the test sent) at most what the socket buffers held.
    assert sent < 16 * 1024 * 1024, sent
    assert seconds < 5, seconds
    with httpx.Client(timeout=5) as client:  # the server goes on serving
        assert client.get(f"{server.url}/healthz").status_code == 200


def test_a_body_just_over_the_limit_gets_the_json_413(serve: Callable[[], ServeProcess]) -> None:
    server = serve()
    with httpx.Client(timeout=10) as client:
        over = client.post(
            f"{server.url}/webhooks/whatsapp", content=b"x" * (LIMIT + 1), headers={"Content-Type": "application/json"}
        )
        assert over.status_code == 413
        assert over.json()["error"]["code"] == "request_entity_too_large"
        within = client.post(
            f"{server.url}/webhooks/whatsapp", content=b"x" * LIMIT, headers={"Content-Type": "application/json"}
        )
        assert within.status_code == 401  # read and checked: the signature is missing
