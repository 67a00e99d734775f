"""SQLite: a database file deleted, replaced or made read-only under a running app is an outage (webhook 503,
``/readyz`` 503), not a 200 written into a file no one will read again."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask

from chatops.config.settings import load_settings
from chatops.db.connect import create_db_engine
from chatops.db.migrate import migrate
from chatops.db.sqlite_file import file_problem, watch
from chatops.web.app import create_app
from tests.webhook import ACCESS_TOKEN, APP_SECRET, VERIFY_TOKEN, Webhook

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[Path, sa.Engine]]:
    path = tmp_path / "chatops.db"
    engine = create_db_engine(f"sqlite:///{path}")
    migrate(engine)
    yield path, engine
    engine.dispose()


@pytest.fixture
def app(database: tuple[Path, sa.Engine]) -> Flask:
    path, engine = database
    settings = load_settings(
        database_url=f"sqlite:///{path}",
        whatsapp_app_secret=APP_SECRET,
        whatsapp_verify_token=VERIFY_TOKEN,
        whatsapp_access_token=ACCESS_TOKEN,
    )
    return create_app(settings, None, db=engine, clock=lambda: NOW)


def delete(path: Path) -> None:
    path.unlink()


def make_read_only(path: Path) -> None:
    path.chmod(0o444)


def replace(path: Path) -> None:
    shutil.copyfile(path, path.with_suffix(".copy"))
    path.unlink()
    path.with_suffix(".copy").rename(path)


@pytest.mark.parametrize(
    ("fault", "reason"),
    [(delete, "was deleted"), (make_read_only, "is read-only"), (replace, "was replaced")],
    ids=["deleted", "read-only", "replaced"],
)
def test_a_lost_or_read_only_file_is_an_outage(
    app: Flask, database: tuple[Path, sa.Engine], fault: Callable[[Path], None], reason: str
) -> None:
    path, _ = database
    client = app.test_client()
    webhook = Webhook(client)
    assert webhook.send_text("before").status_code == 200  # the pool holds connections to the file now
    assert client.get("/readyz").status_code == 200

    fault(path)
    response = webhook.send_text("after")
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["error"]["code"] == "database_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json is not None
    happened = "is read-only" if reason == "is read-only" else f"{reason} while chatops was running"
    assert ready.json["reasons"] == [f"cannot use the database: the SQLite file {path} {happened}"]
    assert not path.with_suffix(".db-journal").exists()
    if fault is make_read_only:  # write permission back: usable again, nothing lost
        path.chmod(0o644)
        assert webhook.send_text("again").status_code == 200
        assert client.get("/readyz").status_code == 200
    elif fault is delete:
        assert not path.exists(), "/readyz did not create an empty file in its place"


def test_an_in_memory_database_is_not_checked() -> None:
    engine = sa.create_engine("sqlite://")
    watch(engine)
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT 1")).scalar_one() == 1
    assert file_problem(engine) is None
    engine.dispose()


def test_a_relative_path_is_checked_where_it_was_opened(tmp_path: Path) -> None:
    engine = create_db_engine("sqlite:///relative.db")  # the autouse fixture made tmp_path the working directory
    try:
        migrate(engine)
        assert file_problem(engine) is None
        os.chdir(tmp_path.parent)
        assert file_problem(engine) is None
        (tmp_path / "relative.db").unlink()
        assert (
            file_problem(engine) == f"the SQLite file {tmp_path / 'relative.db'} was deleted while chatops was running"
        )
    finally:
        engine.dispose()
