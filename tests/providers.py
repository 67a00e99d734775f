"""Variable provider helpers: a provider context at a fixed time, and a loopback JSON API for the http provider
(the ``api`` fixture in conftest.py runs one)."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from chatops.templating.providers import ConversationInfo, ProviderContext, UserInfo

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)  # a Monday; 10:30 in Berlin


def make_context(**changes: Any) -> ProviderContext:
    values: dict[str, Any] = {
        "user": UserInfo(id="4915112345678", channel="whatsapp", name="Ada", phone="+49 151 1234 5678"),
        "conversation": ConversationInfo(
            id=7,
            stage="tracking",
            turn_count=3,
            started_at=NOW - timedelta(minutes=5),
            last_messages=({"direction": "in", "text": "where is my order?", "at": NOW},),
        ),
        "now": NOW,
        "message": {"kind": "text", "text": "Berlin"},
        "timezone": "Europe/Berlin",
        "business_hours": "Mon-Fri 09:00-17:00",
        "static": {"company": "Northwind"},
    }
    values.update(changes)
    return ProviderContext(**values)


# --- a loopback JSON API --------------------------------------------------------------------------------------------


class JsonApi:
    """A real HTTP server on 127.0.0.1: each path answers a scripted list of (status, body) replies in turn (the
    last one repeats); "slow" waits until the test ends."""

    def __init__(self) -> None:
        self.script: dict[str, list[tuple[int, Any]]] = {}
        self.requests: list[dict[str, Any]] = []
        self.release = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._answer(b"")

            def do_POST(self) -> None:
                self._answer(self.rfile.read(int(self.headers.get("Content-Length", "0"))))

            def _answer(self, body: bytes) -> None:
                path = self.path.split("?")[0]
                api.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                replies = api.script.get(path) or [(404, {"error": "no such path"})]
                status, reply = replies.pop(0) if len(replies) > 1 else replies[0]
                if reply == "slow":
                    api.release.wait(5)
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    def hits(self, path: str) -> int:
        return sum(1 for request in self.requests if request["path"].split("?")[0] == path)
