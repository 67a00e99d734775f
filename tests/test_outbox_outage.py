"""The sender through a database outage: a reply Meta accepted is recorded once the database is back, not resent."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from pydantic import SecretStr

from chatops.channels.graph import GraphClient
from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine, parse_database_url
from chatops.engine.sender import OutboxSender
from tests.fakes.graph_api import FakeGraphAPI, Reply
from tests.outbox import T0, WA_TOKEN, add_conversation, add_outbound, outbound
from tests.tcp_proxy import TCPProxy


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_mark_sent_survives_a_short_outage(database_url: str) -> None:
    server = parse_database_url(database_url)
    with TCPProxy(server.host or "127.0.0.1", server.port or 5432) as proxy, FakeGraphAPI() as graph:
        db = create_db_engine(server.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False))
        row_id = add_outbound(db, add_conversation(db), "Your order shipped")
        graph.script(Reply.delayed(0.5))  # the outage starts while Meta is answering

        def cut_when_meta_is_asked() -> None:
            deadline = time.monotonic() + 10
            while not graph.requests and time.monotonic() < deadline:
                time.sleep(0.01)
            proxy.stop()

        restored: list[float] = []

        def sleep_and_restore(seconds: float) -> None:
            restored.append(seconds)
            if not proxy.running:
                proxy.start()

        settings = load_settings(whatsapp_access_token=SecretStr(WA_TOKEN))
        with httpx.Client() as http:
            sender = OutboxSender(
                settings,
                db,
                GraphClient(http, base_url=graph.graph_api_url),
                clock=lambda: T0,
                sleep=sleep_and_restore,
            )
            cutter = threading.Thread(target=cut_when_meta_is_asked)
            cutter.start()
            assert sender.send_due() == 1
            cutter.join()
            sender.close()
        row = outbound(db, row_id)
        db.dispose()
    assert restored  # the first attempt to record the send failed
    assert (row.status, row.provider_message_id) == ("sent", "wamid.FAKE000000000001")
    assert len(graph.requests) == 1
