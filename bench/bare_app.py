"""The ceiling for webhook throughput: a bare WSGI app on waitress that reads the body and answers 200.

``python -m bench.bare_app --port N [--threads 8]`` — the same server and thread count as ``chatops serve``, no
Flask, no signature check, no database. Any path answers, so ``/healthz`` works for the readiness wait.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

_OK = b'{"status":"ok"}'


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Read the request body completely, answer 200 with a tiny JSON body."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if length:
        environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_OK)))])
    return [_OK]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Bare WSGI app on waitress (benchmark baseline).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    options = parser.parse_args(argv)
    from waitress import serve

    serve(app, host=options.host, port=options.port, threads=options.threads, ident="bare", _quiet=True)


if __name__ == "__main__":
    main()
