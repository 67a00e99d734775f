"""Who may read /metrics: a loopback client by default, a bearer of CHATOPS_METRICS_TOKEN when one is set."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask import Flask

from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.db.migrate import migrate
from chatops.web.app import create_app

TOKEN = "metrics-token-Qx81"
REMOTE = {"REMOTE_ADDR": "203.0.113.7"}
LOOPBACK = {"REMOTE_ADDR": "127.0.0.1"}


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., Flask]]:
    url = f"sqlite:///{tmp_path / 'metrics.db'}"
    db = create_db_engine(url, pool_size=2)
    migrate(db)

    def make(**settings: str) -> Flask:
        return create_app(load_settings(database_url=url, **settings), None, db=db)

    yield make
    db.dispose()


def test_without_a_token_only_a_direct_loopback_client_reads_metrics(make_app: Callable[..., Flask]) -> None:
    client = make_app().test_client()

    assert client.get("/metrics", environ_base=LOOPBACK).status_code == 200
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    remote = client.get("/metrics", environ_base=REMOTE)
    proxied = client.get("/metrics", environ_base=LOOPBACK, headers={"X-Forwarded-For": "203.0.113.7"})

    for refused in (remote, proxied):
        assert refused.status_code == 403
        assert refused.json["error"]["code"] == "forbidden"
        assert "CHATOPS_METRICS_TOKEN" in refused.json["error"]["message"]
        assert "chatops_" not in refused.text


def test_with_a_token_every_client_needs_it(make_app: Callable[..., Flask]) -> None:
    client = make_app(metrics_token=TOKEN).test_client()

    allowed = client.get("/metrics", environ_base=REMOTE, headers={"Authorization": f"Bearer {TOKEN}"})
    assert allowed.status_code == 200
    assert "chatops_turns" in allowed.text
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": "Basic x"}):
        refused = client.get("/metrics", environ_base=LOOPBACK, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.json["error"]["code"] == "unauthorized"
        assert TOKEN not in refused.text
