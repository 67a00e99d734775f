"""A loopback fake of the Graph API's send endpoints, speaking Meta's wire format.

It answers ``POST /{phone_number_id}/messages`` (WhatsApp sends and mark-as-read) and ``POST /me/messages``
(Messenger sends and sender actions) with the bodies Meta returns, a fresh message id each time, and
``GET /{node}`` (``/me``, ``/{phone_number_id}``: the cheap token check of ``chatops doctor``) with the node's id; any
``/vNN.N`` version prefix is accepted. Every request is recorded. Replies can be scripted, in order, one per
request: a Graph error body with an HTTP status, a delay (to trigger client timeouts), or a dropped connection.

In tests::

    with FakeGraphAPI() as fake:
        fake.script(Reply.error(131047), Reply.delayed(2.0))
        client = GraphClient(httpx.Client(), base_url=fake.graph_api_url)

Standalone (the bench and ``chatops serve`` against it)::

    python -m tests.fakes.graph_api --port 8089 --latency-ms 50
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from tests.fakes.loopback import LoopbackFake

_VERSION_PREFIX = re.compile(r"^/v\d+(\.\d+)?(?=/)")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it; ``path`` has the version prefix removed, header names lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Reply:
    """How to answer one request: the normal success body unless ``error_code``/``drop`` say otherwise."""

    status: int = 200
    error_code: int | None = None
    error_subcode: int | None = None
    message: str = "An unknown error has occurred."
    error_type: str = "OAuthException"
    delay: float = 0.0
    drop: bool = False
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def error(
        cls,
        code: int,
        *,
        status: int = 400,
        subcode: int | None = None,
        message: str | None = None,
        retry_after: float | None = None,
    ) -> Reply:
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        return cls(status, code, subcode, message or f"(#{code}) Fake Graph API error", headers=headers)

    @classmethod
    def delayed(cls, seconds: float) -> Reply:
        return cls(delay=seconds)

    @classmethod
    def dropped(cls) -> Reply:
        return cls(drop=True)


class FakeGraphAPI(LoopbackFake[RecordedRequest, Reply]):
    """The fake server on 127.0.0.1 (port 0 = any free port), served from a daemon thread."""

    thread_name = "fake-graph-api"

    def __init__(self, *, port: int = 0, latency: float = 0.0, token: str | None = None) -> None:
        super().__init__()
        self.latency = latency
        self.token = token  # when set, any other token is refused with code 190, like an expired one
        self._ids = itertools.count(1)
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graph_api_url(self) -> str:
        """What to set as ``CHATOPS_GRAPH_API_URL``."""
        return f"{self.url}/v25.0"

    def _record(self, request: RecordedRequest) -> Reply:
        return self._record_and_next(request) or Reply()

    def _next_id(self) -> int:
        with self._lock:
            return next(self._ids)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the bench opens many connections at once
    fake: FakeGraphAPI

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out has closed its socket: writing the late answer fails, as it would at Meta.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like Meta's edge
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed ACK (~40 ms)
    # on a kept-alive connection, a delay no real server adds.
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read fake.requests instead

    def do_GET(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        query = dict(parse_qsl(split.query))
        path = _VERSION_PREFIX.sub("", split.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = fake._record(RecordedRequest("GET", path, query, headers, None))
        fake._sleep(fake.latency + reply.delay)
        if reply.drop:
            self.close_connection = True
            return
        if reply.error_code is not None:
            self._send_error(reply.status, reply.error_code, reply.message, reply)
            return
        given = headers.get("authorization", "").removeprefix("Bearer ") or query.get("access_token", "")
        if not given or (fake.token is not None and given != fake.token):
            self._send_error(401, 190, "Error validating access token: Session has expired.", Reply(error_subcode=463))
            return
        node = path.strip("/")
        if not re.fullmatch(r"[^/]+", node):
            self._send_error(400, 100, "Unsupported get request.", Reply())
            return
        # /me with a page token is the page; a phone number id is that number (Meta adds the fields asked for).
        self._send_json(200, {"id": "1234567890" if node == "me" else node, "name": "Fake node"}, reply.headers)

    def do_POST(self) -> None:
        fake = self.server.fake
        split = urlsplit(self.path)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        query = dict(parse_qsl(split.query))
        path = _VERSION_PREFIX.sub("", split.path)
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = fake._record(RecordedRequest("POST", path, query, headers, body))
        fake._sleep(fake.latency + reply.delay)
        if reply.drop:
            self.close_connection = True  # no status line at all: the client sees the connection close
            return
        if reply.error_code is not None:
            self._send_error(reply.status, reply.error_code, reply.message, reply)
            return
        given = headers.get("authorization", "").removeprefix("Bearer ") or query.get("access_token", "")
        if not given or (fake.token is not None and given != fake.token):
            self._send_error(401, 190, "Error validating access token: Session has expired.", Reply(error_subcode=463))
            return
        if not isinstance(body, dict) or not re.fullmatch(r"/[^/]+/messages", path):
            self._send_error(400, 100, "Unsupported post request.", Reply())
            return
        self._send_json(200, _success_body(body, fake._next_id()), reply.headers)

    def _send_error(self, status: int, code: int, message: str, reply: Reply) -> None:
        error: dict[str, Any] = {"message": message, "type": reply.error_type, "code": code}
        if reply.error_subcode is not None:
            error["error_subcode"] = reply.error_subcode
        error["fbtrace_id"] = "AFakeTraceId0"
        self._send_json(status, {"error": error}, reply.headers)

    def _send_json(self, status: int, data: dict[str, Any], headers: dict[str, str]) -> None:
        encoded = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(encoded)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(encoded)


def _success_body(body: dict[str, Any], n: int) -> dict[str, Any]:
    """What Meta answers (see tests/fixtures/meta/*_send_api_response.json), with a fresh id."""
    if body.get("messaging_product") == "whatsapp":
        if body.get("status") == "read":
            return {"success": True}
        to = str(body.get("to", ""))
        return {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
            "messages": [{"id": f"wamid.FAKE{n:012d}"}],
        }
    recipient = str((body.get("recipient") or {}).get("id", ""))
    if "sender_action" in body:
        return {"recipient_id": recipient}
    return {"recipient_id": recipient, "message_id": f"m_FAKE{n:012d}"}


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Graph API on 127.0.0.1 until interrupted.")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    parser.add_argument("--token", default=None, help="refuse any other access token with code 190")
    options = parser.parse_args()
    fake = FakeGraphAPI(port=options.port, latency=options.latency_ms / 1000, token=options.token)
    print(f"fake Graph API on {fake.url}: set CHATOPS_GRAPH_API_URL={fake.graph_api_url}", flush=True)
    try:
        fake._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.server_close()


if __name__ == "__main__":
    main()
