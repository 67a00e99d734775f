"""``chatops worker --metrics-port``: a worker process (no webhook server) exports its own turns and sends.

A real ``chatops serve --no-workers`` takes the webhook, a real ``chatops worker`` answers it, and the worker's
listener is scraped over loopback with and without the bearer token.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.metrics import sample
from tests.processes import OPENAI_KEY, Fakes, ServeProcess, message, post, sends, wait_for
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]

TOKEN = "worker-metrics-token-7Hq"
LISTENER = re.compile(r"metrics:\s+(http://\S+)/metrics")


@pytest.fixture
def environment(bot_dir: Path, fakes: Fakes) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_", "PROMETHEUS_"))}
    return env | {
        "CHATOPS_WHATSAPP_APP_SECRET": APP_SECRET,
        "CHATOPS_WHATSAPP_VERIFY_TOKEN": VERIFY_TOKEN,
        "CHATOPS_WHATSAPP_ACCESS_TOKEN": ACCESS_TOKEN,
        "CHATOPS_GRAPH_API_URL": fakes.graph.graph_api_url,
        "CHATOPS_METRICS_TOKEN": TOKEN,
        "OPENAI_API_KEY": OPENAI_KEY,
        "OPENAI_BASE_URL": fakes.openai.base_url,
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def worker() -> Iterator[list[subprocess.Popen[bytes]]]:
    """The worker processes the test starts (it needs the database URL first); killed at the end."""
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_worker_exports_its_turns_and_sends_on_its_metrics_port(
    database_url: str, bot_dir: Path, fakes: Fakes, environment: dict[str, str], worker: list[subprocess.Popen[bytes]]
) -> None:
    env = environment | {"CHATOPS_DATABASE_URL": database_url}
    server = ServeProcess(bot_dir, env, name="web", args=("--no-workers",)).start()
    log = bot_dir / "worker.log"
    try:
        with log.open("ab") as output:
            command = [sys.executable, "-m", "chatops", "worker", "--concurrency", "2", "--metrics-port", "0"]
            worker.append(subprocess.Popen(command, cwd=bot_dir, env=env, stdout=output, stderr=subprocess.STDOUT))
        match = wait_for(lambda: LISTENER.search(log.read_text()), timeout=30, what="the worker's banner")
        url = match.group(1)
        assert url.startswith("http://127.0.0.1:")  # loopback unless CHATOPS_WORKER_METRICS_HOST says otherwise

        with httpx.Client(timeout=10) as client:
            body = message("hello", wa_id="15550100003", message_id="wamid.WORKER-1")
            assert post(client, server.url, body).status_code == 200
            wait_for(lambda: sends(fakes.graph, "15550100003"), timeout=15, what="the reply", server=server)
            authorized = {"Authorization": f"Bearer {TOKEN}"}
            text = wait_for(
                lambda: (
                    (r := client.get(f"{url}/metrics", headers=authorized)).status_code == 200
                    and sample(
                        r.text, "chatops_outbound_messages_total", channel="whatsapp", outcome="sent", error_code=""
                    )
                    and r.text
                ),
                timeout=5,
                what="the send counted",
            )
            refused = client.get(f"{url}/metrics")
            elsewhere = client.get(f"{url}/readyz", headers=authorized)
    finally:
        server.stop()
    assert sample(text, "chatops_turns_total", outcome="ok") == 1
    assert sample(text, "chatops_turn_seconds_count") == 1
    assert sample(text, "chatops_outbound_messages_total", channel="whatsapp", outcome="sent", error_code="") == 1
    assert sample(text, "chatops_db_pool_size") == 2 + 4  # --concurrency + 4
    assert sample(text, "chatops_webhook_requests_total", channel="whatsapp", status="200") == 0  # not its work
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "unauthorized")
    assert "chatops_" not in refused.text
    assert elsewhere.status_code == 404

    worker[0].terminate()  # SIGTERM: the listener closes with the worker
    assert worker[0].wait(timeout=30) == 0
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/metrics", timeout=2)
