"""Process tests of ``chatops serve`` with poisoned webhooks (docs/events.md, "What enters from a webhook"):
a poisoned message inside a batch costs nothing else of it, and on SQLite, concurrent good requests beside
poisoned ones in the same group commits are all acknowledged. The harness is tests/processes.py.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from tests.processes import Fakes, ServeProcess, inbound, post, unanswered, wait_for
from tests.webhook import PHONE_NUMBER_ID

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]
BAD = "\ufffd"


def batch(messages: list[tuple[str, str, str, Any]]) -> bytes:
    """A WhatsApp webhook with one message per (wamid, wa_id, name, text or timestamp override), escaped as
    Meta escapes: lone surrogates and NUL travel as \\u escapes."""
    now = str(int(time.time()))
    contacts, items = [], []
    for message_id, wa_id, name, text in messages:
        contacts.append({"profile": {"name": name}, "wa_id": wa_id})
        item = {"from": wa_id, "id": message_id, "timestamp": now, "type": "text", "text": {"body": text}}
        if isinstance(text, int):  # a timestamp instead of a text: the message's clock is out of range
            item |= {"timestamp": text, "text": {"body": "odd clock"}}
        items.append(item)
    value = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550009999", "phone_number_id": PHONE_NUMBER_ID},
        "contacts": contacts,
        "messages": items,
    }
    payload = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"value": value}]}]}
    return json.dumps(payload, ensure_ascii=True).encode()


def test_a_poisoned_message_inside_a_batch_costs_nothing_else(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    server = serve(database_url)
    body = batch(
        [
            ("wamid.P-GOOD1", "15550700001", "Ada", "hello"),
            ("wamid.P-SURROGATE\ud800", "15550700002", "B\x00b", "hi \ud800 there\x00"),
            ("wamid.P-CLOCK", "15550700003", "Cy", 10**400),
            ("wamid.P-GOOD2", "15550700004", "Di", "hello"),
        ]
    )
    with httpx.Client(timeout=10) as client:
        response = post(client, server.url, body)
        assert response.status_code == 200, response.text
        assert response.json() == {"stored": 3, "duplicates": 0, "statuses": 0}
        again = post(client, server.url, body)  # Meta's redelivery: nothing new, nothing lost
        assert again.json() == {"stored": 0, "duplicates": 3, "statuses": 0}

        answered = {"wamid.P-GOOD1", f"wamid.P-SURROGATE{BAD}", "wamid.P-GOOD2"}
        wait_for(lambda: not unanswered(db, answered), timeout=30, what="the batch answered", server=server)
        later = batch([("wamid.P-LATER", "15550700002", "Bob", "and now?")])
        assert post(client, server.url, later).status_code == 200
        wait_for(lambda: not unanswered(db, {"wamid.P-LATER"}), timeout=30, what="a later message", server=server)

    rows = {row.provider_message_id: row for row in inbound(db)}
    assert set(rows) == answered | {"wamid.P-LATER"}  # the message with no usable clock was skipped
    assert rows[f"wamid.P-SURROGATE{BAD}"].text == f"hi {BAD} there{BAD}"
    log = server.log.read_text(errors="replace")
    assert "malformed WhatsApp message skipped" in log
    assert "Traceback" not in log


@pytest.mark.parametrize("backend", ["sqlite"])
def test_concurrent_good_requests_beside_poisoned_ones_are_all_acknowledged(
    database_url: str, db: sa.Engine, fakes: Fakes, serve: Callable[..., ServeProcess]
) -> None:
    # A value the database refuses although it is clean: a trigger the schema does not have.
    with db.begin() as connection:
        connection.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON inbound_messages "
            "WHEN NEW.text = 'refuse me' BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
        )
    server = serve(database_url)
    plan: list[tuple[str, bytes, int]] = []  # (wamid, body, expected status)
    for i in range(180):
        wamid, wa_id = f"wamid.G-{i:03d}", f"155508{i % 30:05d}"
        if i % 6 == 1:
            plan.append((wamid, batch([(wamid, wa_id, "N\x00", "poison \ud800\udfff\x00")]), 200))  # cleaned
        elif i % 6 == 3:
            plan.append((wamid, batch([(wamid, wa_id, "Refused", "refuse me")]), 400))
        else:
            plan.append((wamid, batch([(wamid, wa_id, "Good", f"good {i}")]), 200))
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(max_workers=24) as pool:
        responses = list(pool.map(lambda item: post(client, server.url, item[1]), plan))
        statuses = [r.status_code for r in responses]
        assert statuses == [expected for _, _, expected in plan], [
            (wamid, r.status_code, r.text[:200]) for (wamid, _, _), r in zip(plan, responses, strict=True)
        ]
        refused = next(r for (_, _, expected), r in zip(plan, responses, strict=True) if expected == 400)
        assert refused.json()["error"]["message"].startswith("cannot store this webhook: the database refused")
        assert client.get(f"{server.url}/readyz").status_code == 200  # refused data is no outage

    stored = {row.provider_message_id for row in inbound(db)}
    assert stored == {wamid for wamid, _, expected in plan if expected == 200}
    exported = httpx.get(f"{server.url}/metrics", timeout=10).text
    writes = float(re.search(r"^chatops_webhook_batch_deliveries_count (\S+)$", exported, re.M).group(1))  # type: ignore[union-attr]
    deliveries = float(re.search(r"^chatops_webhook_batch_deliveries_sum (\S+)$", exported, re.M).group(1))  # type: ignore[union-attr]
    print(f"\n{deliveries:g} deliveries in {writes:g} group commits")
    assert writes < deliveries, "some requests shared a group commit (else this proved no isolation)"
