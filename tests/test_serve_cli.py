"""`chatops serve` and `chatops worker` refuse to start on a bad configuration, before serving anything."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from chatops.cli.app import app
from tests.conftest import ROOT

runner = CliRunner()


@pytest.fixture(autouse=True)
def example_bot(tmp_path: Path) -> None:
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    for folder in ("templates", "data"):
        shutil.copytree(ROOT / folder, tmp_path / folder)


def test_a_channel_with_a_token_but_no_app_secret_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATOPS_WHATSAPP_ACCESS_TOKEN", "token")
    result = runner.invoke(app, ["serve", "--port", "0"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "Error: the whatsapp channel has credentials but no app secret: webhooks cannot be verified",
        "Hint: set CHATOPS_WHATSAPP_APP_SECRET (Meta app → Settings → Basic), or pass --insecure-skip-signature "
        "for local development only",
    ]


def test_serve_refuses_a_schema_that_is_behind() -> None:
    result = runner.invoke(app, ["--database-url", "sqlite:///fresh.db", "serve", "--port", "0"])
    assert result.exit_code == 1
    assert "Error: the database schema is behind: at empty, head is" in result.stderr
    assert "Hint: run `chatops migrate` (or start with `chatops serve --migrate`)" in result.stderr


def test_worker_reports_an_invalid_bot_with_its_location(tmp_path: Path) -> None:
    stages = ROOT.joinpath("stages.yaml").read_text().replace("start: welcome", "start: welcom")
    (tmp_path / "stages.yaml").write_text(stages)
    result = runner.invoke(app, ["worker"])
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: stages.yaml:5:10:")
    assert "welcom" in result.stderr


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_serve_on_a_port_in_use_says_so_without_a_traceback(busy_port: int) -> None:
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    result = runner.invoke(app, ["serve", "--port", str(busy_port)])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-2:] == [
        f"Error: cannot listen on 127.0.0.1:{busy_port}: the port is already in use",
        "Hint: stop the other server, or choose another port with --port (0 picks a free one)",
    ]
    assert "Traceback" not in result.stderr


def test_worker_with_its_metrics_port_in_use_says_so_before_taking_work(
    busy_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    monkeypatch.setenv("CHATOPS_WORKER_METRICS_PORT", str(busy_port))
    result = runner.invoke(app, ["worker"])
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-2:] == [
        f"Error: cannot listen on 127.0.0.1:{busy_port}: the port is already in use",
        "Hint: stop the other server, or choose another port with --metrics-port (0 picks a free one)",
    ]
    result = runner.invoke(app, ["worker", "--metrics-host", "203.0.113.5"])  # the flag overrides the setting
    assert result.stderr.splitlines()[-1] == (
        "Hint: use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface) with --metrics-host"
    )


def test_serve_on_an_address_this_machine_does_not_have() -> None:
    assert runner.invoke(app, ["migrate"]).exit_code == 0
    result = runner.invoke(app, ["serve", "--host", "203.0.113.5", "--port", "8000"])  # TEST-NET-3, never local
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr.splitlines()[-2:] == [
        "Error: cannot listen on 203.0.113.5:8000: no network interface of this machine has the address 203.0.113.5",
        "Hint: use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface) with --host",
    ]


def test_a_host_name_with_two_addresses_listens_on_both_and_reports_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    # `localhost` resolves to 127.0.0.1 and ::1 on many machines: waitress then listens on each address.
    from chatops.web.server import listen_in_thread

    resolve = socket.getaddrinfo

    def two_addresses(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host != "twice.test":
            return resolve(host, port, *args, **kwargs)  # type: ignore[arg-type]
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))
            for address in ("127.0.0.1", "127.0.0.2")  # both loopback on Linux
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)

    def hello(_environ: object, start_response: Callable[..., object]) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello"]

    listener = listen_in_thread(hello, host="twice.test", port=0)
    try:
        assert type(listener.server).__name__ == "MultiSocketServer"
        assert listener.host == "127.0.0.1"
        assert httpx.get(f"http://127.0.0.1:{listener.port}/", timeout=5).text == "hello"
    finally:
        listener.close()
