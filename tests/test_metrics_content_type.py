"""``GET /metrics`` answers with the Prometheus text format's Content-Type, exactly once."""

from __future__ import annotations

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from chatops.config.settings import load_settings
from chatops.web.app import create_app


def test_metrics_content_type_names_its_charset_once() -> None:
    app = create_app(load_settings(database_url="sqlite:///metrics.db"), None)
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST  # text/plain; version=…; charset=utf-8
    assert response.headers["Content-Type"].count("charset=") == 1
