"""deploy/prometheus and deploy/grafana name only metrics that /metrics exports, and promtool accepts the rules and
the example scrape configuration."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from chatops.config.settings import load_settings
from chatops.web.app import create_app
from tests.conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "chatops-alerts.yaml"
DASHBOARD = ROOT / "deploy" / "grafana" / "chatops-dashboard.json"
SCRAPE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
TOKEN_FILE = "/etc/prometheus/chatops-metrics-token"


SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def exported_series(database_url: str) -> set[str]:
    """The sample names /metrics serves or declares (a labelled counter has no sample before its first event),
    from the real route: counters as _total, histograms as _bucket/_sum/_count."""
    text = create_app(load_settings(database_url=database_url), None).test_client().get("/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}
    for family, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        base = family.removesuffix("_total")
        names |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def named_metrics(expression: str) -> set[str]:
    return set(re.findall(r"\bchatops_[a-z_]+\b", expression))


def expressions() -> dict[str, list[str]]:
    rules = [rule["expr"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {"rules": rules, "dashboard": [target["expr"] for panel in panels for target in panel["targets"]]}


@pytest.mark.parametrize("backend", ["sqlite"])
def test_every_metric_the_rules_and_dashboard_name_is_exported(database_url: str) -> None:
    exported = exported_series(database_url)
    for where, exprs in expressions().items():
        named = set().union(*(named_metrics(expr) for expr in exprs))
        assert named, where
        assert named <= exported, f"{where} names metrics /metrics does not export: {sorted(named - exported)}"
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    assert {"ChatopsInboxAging", "ChatopsSendsFailing", "ChatopsWorkersMissing"} <= alerts


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian: prometheus)")
def test_promtool_accepts_the_scrape_configuration(tmp_path: Path) -> None:
    # promtool opens the token file and the rule files the configuration names: give it the token in a file of
    # our own and the rules beside the configuration, as the comment in it says to install them.
    (tmp_path / "token").write_text("a-token\n")
    text = SCRAPE_CONFIG.read_text()
    assert text.count(TOKEN_FILE) == 2
    (tmp_path / "prometheus.yml").write_text(text.replace(TOKEN_FILE, str(tmp_path / "token")))
    shutil.copy(RULES, tmp_path / RULES.name)
    result = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout
    jobs = {job["job_name"] for job in yaml.safe_load(text)["scrape_configs"]}
    assert jobs == {"chatops", "chatops-worker"}
