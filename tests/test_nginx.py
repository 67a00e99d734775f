"""The nginx configuration of docs/deployment.md, run for real in front of ``chatops serve`` (waitress, gunicorn).

nginx (Debian's package; ``.ci/run`` installs it) listens on loopback with TLS (a self-signed certificate made
here) and the documented file ``deploy/nginx/chatops.conf``, changed only where a test must: ports, certificate
and log paths. Through it: the verify handshake, a signed webhook whose signature must survive byte for byte, a
body over the limit refused by nginx itself, ``/metrics`` not public, the request id in nginx's log.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from chatops.channels import sign
from tests.processes import OPENAI_KEY, Fakes, ServeProcess, reads, sends, wait_for
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, whatsapp_text

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(90),
    # CI installs nginx (.ci/run): there a missing nginx fails the test instead of skipping it.
    pytest.mark.skipif(
        shutil.which("nginx") is None and not os.environ.get("CI"), reason="nginx is not installed (.ci/run does it)"
    ),
]

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "deploy" / "nginx" / "chatops.conf"


def test_the_documented_configuration_is_the_tested_file() -> None:
    docs = (ROOT / "docs" / "deployment.md").read_text()
    assert CONF.read_text() in docs


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Nginx:
    """nginx in the foreground with the documented site file, on loopback ports of its own."""

    def __init__(self, folder: Path, *, upstream: str) -> None:
        self.folder = folder
        self.https_port, self.http_port = free_port(), free_port()
        self.cert, self.key = folder / "cert.pem", folder / "key.pem"
        self.access_log = folder / "access.log"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost", "-keyout", str(self.key), "-out", str(self.cert)],
            check=True, capture_output=True,
        )  # fmt: skip
        site = CONF.read_text()
        for documented, here in {
            "server 127.0.0.1:8000;": f"server {upstream};",
            "listen 443 ssl http2;": f"listen 127.0.0.1:{self.https_port} ssl http2;",
            "listen [::]:443 ssl http2;": "",
            "listen 80;": f"listen 127.0.0.1:{self.http_port};",
            "listen [::]:80;": "",
            "/etc/letsencrypt/live/bot.example.com/fullchain.pem": str(self.cert),
            "/etc/letsencrypt/live/bot.example.com/privkey.pem": str(self.key),
            "/var/log/nginx/chatops.access.log": str(self.access_log),
        }.items():
            assert documented in site, documented
            site = site.replace(documented, here)
        (folder / "chatops.conf").write_text(site)
        temp = folder / "temp"
        temp.mkdir()
        (folder / "nginx.conf").write_text(
            f"""daemon off;
            {"user root;" if os.geteuid() == 0 else ""}
            worker_processes 1;
            pid {folder}/nginx.pid;
            error_log {folder}/error.log warn;
            events {{ worker_connections 64; }}
            http {{
                client_body_temp_path {temp}/body; proxy_temp_path {temp}/proxy;
                fastcgi_temp_path {temp}/fastcgi; uwsgi_temp_path {temp}/uwsgi; scgi_temp_path {temp}/scgi;
                include {folder}/chatops.conf;
            }}
            """
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Nginx:
        command = ["nginx", "-p", str(self.folder), "-c", str(self.folder / "nginx.conf")]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        self.process = subprocess.Popen(command)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.https_port)) == 0:
                    return self
            time.sleep(0.05)
        raise AssertionError(f"nginx did not listen: {(self.folder / 'error.log').read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"https://localhost:{self.https_port}"


@pytest.fixture(params=["waitress", "gunicorn"])
def proxied(
    request: pytest.FixtureRequest, bot_dir: Path, fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Nginx, ServeProcess]]:
    """``chatops serve`` (SQLite) on a loopback port, nginx in front of it."""
    from tests.databases import empty_database

    with empty_database("sqlite", tmp_path_factory.mktemp("nginx-db")) as url:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
        env |= {
            "CHATOPS_DATABASE_URL": url,
            "CHATOPS_WHATSAPP_APP_SECRET": APP_SECRET,
            "CHATOPS_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
            "CHATOPS_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
            "CHATOPS_GRAPH_API_URL": fakes.graph.graph_api_url,
            "OPENAI_API_KEY": OPENAI_KEY,
            "OPENAI_BASE_URL": fakes.openai.base_url,
            "COLUMNS": "200",
            "PYTHONUNBUFFERED": "1",
        }
        args = ("--migrate", "--server", request.param) + (("--processes", "2") if request.param == "gunicorn" else ())
        server = ServeProcess(bot_dir, env, name=f"behind-nginx-{request.param}", args=args)
        nginx = None
        try:
            server.start()
            nginx = Nginx(tmp_path_factory.mktemp("nginx"), upstream=server.url.removeprefix("http://")).start()
            yield nginx, server
        finally:
            if nginx is not None:
                nginx.stop()
            server.stop()


def test_a_signed_webhook_passes_nginx_byte_for_byte(proxied: tuple[Nginx, ServeProcess], fakes: Fakes) -> None:
    nginx, server = proxied
    # Meta signs the exact bytes it sends: keep odd spacing, escapes and non-ASCII, which any re-encoding changes.
    payload = json.loads(whatsapp_text("héllo ✓", wa_id="15550100077", message_id="wamid.NGINX-1",
                                       timestamp=int(time.time())))  # fmt: skip
    body = json.dumps(payload, indent=1, ensure_ascii=False).replace(': "', ':   "').encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, APP_SECRET)}
    with httpx.Client(verify=ssl.create_default_context(cafile=str(nginx.cert)), timeout=10) as client:
        challenge = {"hub.mode": "subscribe", "hub.verify_token": VERIFY_TOKEN, "hub.challenge": "7331"}
        answer = client.get(f"{nginx.url}/webhooks/whatsapp", params=challenge)
        assert (answer.status_code, answer.text) == (200, "7331")

        stored = client.post(f"{nginx.url}/webhooks/whatsapp", content=body,
                             headers={**headers, "X-Request-ID": "req-nginx-test-1"})  # fmt: skip
        assert stored.status_code == 200, stored.text
        assert stored.json() == {"stored": 1, "duplicates": 0, "statuses": 0}
        assert stored.headers["x-request-id"] == "req-nginx-test-1"
        wait_for(lambda: "wamid.NGINX-1" in reads(fakes.graph), timeout=15, what="the reply", server=server)
        assert len(sends(fakes.graph, "15550100077")) == 1

        tampered = body.replace(b"h\xc3\xa9llo", b"hello")
        refused = client.post(f"{nginx.url}/webhooks/whatsapp", content=tampered, headers=headers)
        assert refused.status_code == 403  # a signature that does not match

        # Over the limit: nginx answers 413 itself (its HTML page), chatops never sees the body.
        too_big = b"{" + b" " * (4 * 1024 * 1024) + b"}"
        big = client.post(f"{nginx.url}/webhooks/whatsapp", content=too_big, headers=headers)
        assert big.status_code == 413
        assert "nginx" in big.text

        assert client.get(f"{nginx.url}/metrics").status_code == 404
        assert client.get(f"{nginx.url}/readyz").status_code == 200
        plain = client.get(f"http://127.0.0.1:{nginx.http_port}/webhooks/whatsapp", follow_redirects=False)
        assert plain.status_code == 301
    log = nginx.access_log.read_text()
    assert "request_id=req-nginx-test-1" in log
    assert '"POST /webhooks/whatsapp HTTP/1.1" 413' in log


def test_the_admin_api_passes_nginx_with_its_key(proxied: tuple[Nginx, ServeProcess]) -> None:
    nginx, server = proxied
    created = subprocess.run(
        [sys.executable, "-m", "chatops", "keys", "create", "--name", "nginx-test", "--role", "viewer", "--json"],
        cwd=server.workdir,
        env=server.env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = json.loads(created.stdout)["secret"]
    with httpx.Client(verify=ssl.create_default_context(cafile=str(nginx.cert)), timeout=10) as client:
        listed = client.get(f"{nginx.url}/api/v1/conversations", headers={"Authorization": f"Bearer {key}"})
        assert listed.status_code == 200, listed.text
        assert listed.json() == {"items": [], "next_cursor": None}
        refused = client.get(f"{nginx.url}/api/v1/conversations")
        assert refused.status_code == 401
        assert set(refused.json()["error"]) == {"code", "message", "hint"}
        assert client.get(f"{nginx.url}/api/v1/openapi.json").json()["openapi"].startswith("3.1")


def test_a_console_page_and_its_assets_pass_nginx(proxied: tuple[Nginx, ServeProcess]) -> None:
    nginx, _ = proxied
    with httpx.Client(verify=ssl.create_default_context(cafile=str(nginx.cert)), timeout=10) as client:
        page = client.get(f"{nginx.url}/console/login")
        assert page.status_code == 200
        assert 'name="csrf_token"' in page.text
        css = client.get(f"{nginx.url}/console/static/console.css", headers={"Accept-Encoding": "gzip"})
        assert css.status_code == 200
        assert css.headers["content-encoding"] == "gzip"  # nginx compresses the console's assets
        assert "body" in css.text  # httpx decoded it: the stylesheet itself
