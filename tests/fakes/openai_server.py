"""A loopback fake OpenAI server speaking the real Chat Completions wire format.

``POST /v1/chat/completions`` (and ``/chat/completions``) answers a ``chat.completion`` object, or OpenAI's
error body ``{"error": {"message", "type", "code", "param"}}``. Every request is recorded. Answers come from a
script (one scripted response per request, in order) and, when the script is empty, from a default responder:

- a plain request gets ``echo: <last user message>``;
- a ``response_format`` json_schema request gets a JSON object whose first required string property holds an
  enum value named in the last user message, else ``none`` when allowed, else the first enum value.

In tests::

    with FakeOpenAI() as fake:
        fake.script(HTTPError(429, retry_after=0.2), Reply("hello"))
        client = OpenAIClient("sk-test", fake.base_url)

Standalone (the benchmark): ``python -m tests.fakes.openai_server --port 8099 --latency-ms 300``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.fakes.loopback import LoopbackFake

COMPLETION_PATHS = ("/v1/chat/completions", "/chat/completions")


@dataclass(frozen=True)
class Reply:
    """Answer with ``text`` as the assistant's message."""

    text: str
    finish_reason: str = "stop"
    delay: float = 0.0
    model: str | None = None


@dataclass(frozen=True)
class JSONReply:
    """Answer with ``json.dumps(value)`` as the message (a structured-output answer); ``raw`` sends as is."""

    value: Any = None
    raw: str | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class HTTPError:
    """Answer ``status`` with OpenAI's error body, and ``Retry-After`` when given (seconds)."""

    status: int
    message: str = "The server had an error while processing your request."
    type: str = "server_error"
    code: str | None = None
    retry_after: float | None = None
    delay: float = 0.0


@dataclass(frozen=True)
class Disconnect:
    """Close the connection without answering (the client sees a connection error)."""

    delay: float = 0.0


Scripted = Reply | JSONReply | HTTPError | Disconnect


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received: path, headers (lower-cased names), decoded JSON body, monotonic time."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    received_at: float = field(compare=False)

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.body.get("messages", []))


class FakeOpenAI(LoopbackFake[RecordedRequest, Scripted]):
    """The fake server: start/stop (or a ``with`` block), ``base_url``, ``script(...)``, ``requests``.

    ``latency_ms`` is added to every answer (the benchmark uses 300). Threads per connection, daemonic, and a
    deep listen queue, so hundreds of concurrent clients are served.
    """

    thread_name = "fake-openai"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        latency_ms: float = 0.0,
        responder: Callable[[dict[str, Any]], Scripted] | None = None,
        models: frozenset[str] | None = None,
    ) -> None:
        super().__init__()
        self.models = models  # what GET /v1/models/{id} knows (None: any id); the others are 404 model_not_found
        self.latency = latency_ms / 1000.0
        self.responder = responder or default_response
        self._ids = itertools.count(1)
        self._server = _Server((host, port), _handler_for(self))

    @property
    def base_url(self) -> str:
        """What to give the SDK as ``base_url`` (ends in ``/v1``, like the real one)."""
        return f"http://127.0.0.1:{self.port}/v1"

    # Called from handler threads.
    def _record(self, path: str, headers: dict[str, str], body: dict[str, Any]) -> Scripted:
        scripted = self._record_and_next(RecordedRequest(path, headers, body, time.monotonic()))
        return scripted if scripted is not None else self.responder(body)

    def _completion(self, body: dict[str, Any], content: str, finish_reason: str, model: str | None) -> bytes:
        prompt_tokens = sum(_count_tokens(str(m.get("content", ""))) for m in body.get("messages", []))
        completion_tokens = _count_tokens(content)
        answer = {
            "id": f"chatcmpl-fake{next(self._ids):06d}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model or str(body.get("model", "gpt-4o-mini")),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
            "system_fingerprint": "fp_fake",
        }
        return json.dumps(answer).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the benchmark opens hundreds of connections at once
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout test, shutdown) is expected; the default prints a traceback.
        pass


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the SDK's connection pool expects
        # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed ACK
        # (~40 ms) on a kept-alive connection, which would count as AI latency in the benchmark.
        disable_nagle_algorithm = True
        server_version = "FakeOpenAI/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if self.path.split("?", 1)[0] not in COMPLETION_PATHS:
                self._send_error(HTTPError(404, f"Invalid URL (POST {self.path})", "invalid_request_error"))
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._send_error(
                    HTTPError(400, "We could not parse the JSON body of your request.", "invalid_request_error")
                )
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            action = fake._record(self.path, headers, body)
            fake._sleep(fake.latency + action.delay)
            if isinstance(action, Disconnect):
                self.close_connection = True
                return
            if isinstance(action, HTTPError):
                self._send_error(action)
                return
            if isinstance(action, JSONReply):
                content = action.raw if action.raw is not None else json.dumps(action.value)
                self._send(200, fake._completion(body, content, "stop", None))
                return
            self._send(200, fake._completion(body, action.text, action.finish_reason, action.model))

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            model = path.removeprefix("/v1").removeprefix("/models/") if "/models/" in path else None
            if not model:
                self._send_error(HTTPError(404, f"Invalid URL (GET {self.path})", "invalid_request_error"))
                return
            if not self.headers.get("Authorization", "").removeprefix("Bearer "):
                self._send_error(HTTPError(401, "You didn't provide an API key.", "invalid_request_error"))
                return
            if fake.models is not None and model not in fake.models:
                message = f"The model '{model}' does not exist or you do not have access to it."
                self._send_error(HTTPError(404, message, "invalid_request_error", code="model_not_found"))
                return
            body = {"id": model, "object": "model", "created": 1700000000, "owned_by": "fake"}
            self._send(200, json.dumps(body).encode())

        def _send_error(self, error: HTTPError) -> None:
            payload = {"error": {"message": error.message, "type": error.type, "param": None, "code": error.code}}
            extra = {"Retry-After": f"{error.retry_after:g}"} if error.retry_after is not None else {}
            self._send(error.status, json.dumps(payload).encode(), extra)

        def _send(self, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("x-request-id", f"req_fake_{time.monotonic_ns()}")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

    return Handler


def default_response(body: dict[str, Any]) -> Scripted:
    """Echo the last user message, or for a json_schema request a valid answer (see the module docstring)."""
    user_text = next(
        (str(m.get("content", "")) for m in reversed(body.get("messages", [])) if m.get("role") == "user"), ""
    )
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        schema = response_format.get("json_schema", {}).get("schema", {})
        return JSONReply(_schema_answer(schema, user_text))
    if response_format.get("type") == "json_object":
        return JSONReply({"echo": user_text})
    return Reply(f"echo: {user_text}")


def _schema_answer(schema: dict[str, Any], user_text: str) -> dict[str, Any]:
    words = set(re.findall(r"\w+", user_text.casefold()))
    answer: dict[str, Any] = {}
    properties: dict[str, Any] = schema.get("properties", {})
    for name in schema.get("required", list(properties)):
        enum = [str(value) for value in properties.get(name, {}).get("enum", [])]
        if enum:
            named = [value for value in enum if value.casefold() in words]
            answer[name] = named[0] if named else ("none" if "none" in enum else enum[0])
        else:
            answer[name] = ""
    return answer


def _count_tokens(text: str) -> int:
    # About one token per word or punctuation mark: deterministic, close enough for traces and benchmarks.
    return len(re.findall(r"\w+|[^\w\s]", text))


def main(argv: list[str] | None = None) -> None:
    """Run the fake until interrupted, printing its base URL."""
    parser = argparse.ArgumentParser(description="Loopback fake OpenAI Chat Completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="fixed delay added to every answer")
    args = parser.parse_args(argv)
    fake = FakeOpenAI(host=args.host, port=args.port, latency_ms=args.latency_ms)
    print(f"fake OpenAI listening on http://{args.host}:{fake.port}/v1 (latency {args.latency_ms:g} ms)", flush=True)
    try:
        fake._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.server_close()


if __name__ == "__main__":
    main()
