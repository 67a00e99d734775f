"""Process-level proofs that nothing stops a worker or sender thread of a real ``chatops serve`` / ``chatops worker``.

The harness is tests/test_server_process.py's (a child process, loopback fakes of the Graph API and OpenAI, signed
webhooks). The bot here has one stage whose reply shows the values of a test plug-in provider
(tests/plugins/hostile.py, loaded by dotted path with the repository on PYTHONPATH); the message text picks what
it returns: a lone surrogate, NUL, NaN, or SystemExit. docs/operations.md ("When something goes wrong") describes
what these prove.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from chatops.db.tables import inbound_messages
from chatops.engine.turn import FALLBACK_ERROR_TEXT
from tests.conftest import ROOT
from tests.outbox import add_conversation, add_outbound, outbound
from tests.plugins.hostile import write_hostile_bot
from tests.processes import Fakes, ServeProcess, inbound, message, post, sends, sent_text, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


def settled(db: sa.Engine, wa_ids: list[str]) -> bool:
    """Every message of these users is answered or given up (none pending)."""
    rows = [row for wa_id in wa_ids for row in inbound(db, wa_id=wa_id)]
    return len(rows) == len(wa_ids) and all(row.status in ("done", "failed") for row in rows)


def sent_to(both: Fakes, wa_id: str) -> list[str]:
    return [sent_text(request) for request in sends(both.graph, wa_id)]


def test_hostile_provider_values_leave_every_thread_alive(
    backend: str,
    database_url: str,
    db: sa.Engine,
    bot_dir: Path,
    fakes: Fakes,
    serve: Callable[..., ServeProcess],
) -> None:
    write_hostile_bot(bot_dir)
    server = serve(database_url, PYTHONPATH=str(ROOT), CHATOPS_TURN_MAX_ATTEMPTS="2")
    users = {"surrogate": "15550700001", "nul": "15550700002", "nan": "15550700003"}
    with httpx.Client(timeout=10) as client:
        for text, wa_id in users.items():
            response = post(client, server.url, message(f"{text} please", wa_id=wa_id, message_id=f"wamid.{text}"))
            assert response.status_code == 200, response.text
        bad_row = None
        if backend == "sqlite":  # a reply that cannot be encoded (PostgreSQL cannot even store one)
            now = datetime.now(UTC)
            conversation = add_conversation(db, user_id="15550700004", last_inbound_at=now)
            bad_row = add_outbound(db, conversation, "lone \ud800 reply", next_attempt_at=now)
        # NaN is refused by PostgreSQL twice (2 attempts, 2 s apart), then the message is failed.
        wait_for(lambda: settled(db, list(users.values())), timeout=30, what="every message settled", server=server)
        later = "15550700009"
        post(client, server.url, message("plain please", wa_id=later, message_id="wamid.later"))
        wait_for(lambda: sent_to(fakes, later), timeout=15, what="the later answer", server=server)
        assert client.get(f"{server.url}/readyz").status_code == 200

    assert sent_to(fakes, users["surrogate"]) == ["Value: lone \ufffd surrogate {'key \ufffd': 'v'}"]
    assert sent_to(fakes, users["nul"]) == ["Value: nul \ufffd here {}"]
    assert sent_to(fakes, later) == ["Value: plain {}"]
    [nan] = inbound(db, wa_id=users["nan"])
    if backend == "postgresql":
        assert nan.status == "failed"
        with db.connect() as connection:
            error = connection.execute(sa.select(inbound_messages.c.error).where(inbound_messages.c.id == nan.id))
            assert error.scalar_one().startswith("UnstorableError: the database refused a value")
        assert sent_to(fakes, users["nan"]) == [FALLBACK_ERROR_TEXT]
    else:  # SQLite keeps JSON as text: NaN is stored, and rendered as the template shows it
        assert nan.status == "done"
        assert sent_to(fakes, users["nan"]) == ["Value: nan {}"]
    if bad_row is not None:
        row = outbound(db, bad_row)
        assert row.status == "failed"
        assert row.error.startswith("UnicodeEncodeError")
    log = server.log.read_text(errors="replace")
    assert "thread died" not in log
    assert "database unavailable" not in log


def test_readyz_reports_a_dead_worker_and_serve_starts_it_again(
    database_url: str,
    db: sa.Engine,
    bot_dir: Path,
    fakes: Fakes,
    serve: Callable[..., ServeProcess],
) -> None:
    write_hostile_bot(bot_dir)
    server = serve(database_url, PYTHONPATH=str(ROOT), CHATOPS_TURN_MAX_ATTEMPTS="1")
    with httpx.Client(timeout=10) as client:
        assert client.get(f"{server.url}/readyz").status_code == 200
        dying = "15550800001"
        post(client, server.url, message("exit please", wa_id=dying, message_id="wamid.exit"))

        def unready() -> list[str]:
            response = client.get(f"{server.url}/readyz")
            return response.json()["reasons"] if response.status_code == 503 else []

        reasons = wait_for(unready, timeout=15, what="/readyz 503", server=server)
        assert len(reasons) == 1
        assert reasons[0].startswith("worker ")
        assert "thread died; it is restarted within" in reasons[0]
        wait_for(lambda: "started it again (restart 1)" in server.log.read_text(), timeout=10, what="the restart")
        wait_for(lambda: client.get(f"{server.url}/readyz").status_code == 200, timeout=10, what="ready again")
        later = "15550800002"
        post(client, server.url, message("plain please", wa_id=later, message_id="wamid.after"))
        wait_for(lambda: sent_to(fakes, later), timeout=15, what="the later answer", server=server)

    [died] = inbound(db, wa_id=dying)
    assert died.status == "failed"  # its one attempt was counted before the thread ended
    assert sent_to(fakes, dying) == [FALLBACK_ERROR_TEXT]
    assert sent_to(fakes, later) == ["Value: plain {}"]
    log = server.log.read_text()
    assert "thread died: SystemExit: 3" in log
    assert "Traceback" in log  # the death is logged with where it happened


@pytest.mark.parametrize("backend", ["sqlite"])
def test_chatops_worker_says_a_problem_once_not_every_second(
    database_url: str,
    db: sa.Engine,
    bot_dir: Path,
) -> None:
    now = datetime.now(UTC)
    add_outbound(db, add_conversation(db, last_inbound_at=now), "waiting for a token", next_attempt_at=now)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATOPS_", "OPENAI_"))}
    env |= {  # no WhatsApp token; PYTHONPATH: this checkout's chatops, whatever is installed
        "CHATOPS_DATABASE_URL": database_url,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        "PYTHONUNBUFFERED": "1",
    }
    log = bot_dir / "worker.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatops", "worker", "--concurrency", "1"],
            cwd=bot_dir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    problem = "outbound message(s) wait: set CHATOPS_WHATSAPP_ACCESS_TOKEN"
    try:
        wait_for(lambda: problem in log.read_text(), timeout=30, what="the warning")
        time.sleep(3.5)  # three more rounds of the once-a-second check
    finally:
        process.terminate()
        process.wait(timeout=30)
    output = log.read_text()
    assert output.count(problem) == 1, output
