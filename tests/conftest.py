"""Shared fixtures. Every test starts with no CHATOPS_* / OPENAI_* variables and in its own directory."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa

from tests.databases import BACKENDS, MigratedTemplates, empty_database
from tests.fakes.graph_api import FakeGraphAPI
from tests.fakes.openai_server import FakeOpenAI
from tests.processes import Fakes, ServeProcess, serve_env
from tests.providers import JsonApi
from tests.replays import OrderAPI, Recorded, recorded_corpus

ROOT = Path(__file__).resolve().parent.parent
META_FIXTURES = ROOT / "tests" / "fixtures" / "meta"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("CHATOPS_", "OPENAI_")) and name not in (
            "CHATOPS_TEST_DATABASE_URL",
            "CHATOPS_REQUIRE_POSTGRES",
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # a stray .env or chatops.db never leaks between tests


@pytest.fixture
def chatops_logging(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Logging as every command sets it up (chatops.logs, at DEBUG), captured; library levels restored after."""
    from chatops.logs import LIBRARY_LOGGERS, configure_logging

    saved = {name: logging.getLogger(name).level for name in (*LIBRARY_LOGGERS, "chatops")}
    caplog.set_level(logging.DEBUG)
    configure_logging("DEBUG")
    try:
        yield caplog
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def meta_fixture() -> MetaFixtures:
    return MetaFixtures(META_FIXTURES)


class MetaFixtures:
    """Reads tests/fixtures/meta/*.json as the exact bytes Meta would sign."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def bytes(self, name: str) -> bytes:
        return (self.folder / f"{name}.json").read_bytes()

    def names(self, prefix: str = "") -> list[str]:
        return sorted(p.stem for p in self.folder.glob(f"{prefix}*.json"))


# Databases ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def _migrated_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MigratedTemplates]:
    templates = MigratedTemplates(tmp_path_factory.mktemp("db-templates"))
    yield templates
    templates.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """``sqlite`` or ``postgresql``; tests using it run once per database."""
    return str(request.param)


@pytest.fixture
def empty_database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A new, empty (unmigrated) database of ``backend``, dropped afterwards."""
    with empty_database(backend, tmp_path) as url:
        yield url


@pytest.fixture
def database_url(backend: str, _migrated_templates: MigratedTemplates) -> str:
    """A migrated, empty database of ``backend`` (a fresh copy or truncated tables per test)."""
    return _migrated_templates.sqlite_url() if backend == "sqlite" else _migrated_templates.postgres_url()


@pytest.fixture
def db(database_url: str) -> Iterator[sa.Engine]:
    """An engine on ``database_url``."""
    from chatops.db.connect import create_db_engine

    engine = create_db_engine(database_url)
    yield engine
    engine.dispose()


# Server processes (tests/processes.py has the helpers) ------------------------------------------------------


@pytest.fixture
def fakes() -> Iterator[Fakes]:
    """The loopback fake Graph API and fake OpenAI servers, running."""
    graph = FakeGraphAPI().start()
    openai = FakeOpenAI().start()
    try:
        yield Fakes(graph, openai)
    finally:
        graph.stop()
        openai.stop()


@pytest.fixture
def bot_dir(tmp_path: Path) -> Path:
    """A copy of the example bot (stages.yaml, templates/, data/) in the test's own directory."""
    shutil.copy(ROOT / "stages.yaml", tmp_path / "stages.yaml")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    shutil.copytree(ROOT / "data", tmp_path / "data")
    return tmp_path


@pytest.fixture
def serve(bot_dir: Path, fakes: Fakes) -> Iterator[Callable[..., ServeProcess]]:
    """Starts ``chatops serve`` processes on a database URL; every one is killed at the end of the test."""
    started: list[ServeProcess] = []

    def start(database_url: str, **settings: str) -> ServeProcess:
        env = serve_env(database_url, fakes, **settings)
        server = ServeProcess(bot_dir, env, name=f"serve-{len(started)}")
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.kill()


# A replay corpus (tests/replays.py) -------------------------------------------------------------------------


@pytest.fixture
def order_api() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OrderAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/orders"
    server.shutdown()
    server.server_close()


@pytest.fixture
def recorded(tmp_path: Path, database_url: str, db: sa.Engine, order_api: str) -> Iterator[Recorded]:
    """Three conversations recorded through the Flask route and the worker, AI through the fake OpenAI."""
    with recorded_corpus(tmp_path, database_url, db, order_api) as corpus:
        yield corpus


# A loopback JSON API for http providers (tests/providers.py) --------------------------------------------------


@pytest.fixture
def api() -> Iterator[JsonApi]:
    """A running :class:`tests.providers.JsonApi`; requests that wait on ``release`` are let go at the end."""
    server = JsonApi()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()
