"""Shared fixtures. Every test starts with no CHATOPS_* / OPENAI_* variables and in its own directory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
META_FIXTURES = ROOT.parent / "shared" / "fixtures" / "meta"
if not META_FIXTURES.is_dir():  # a checkout with the fixtures copied in
    META_FIXTURES = Path(__file__).parent / "data" / "meta"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith(("CHATOPS_", "OPENAI_")) and name not in (
            "CHATOPS_TEST_DATABASE_URL",
            "CHATOPS_REQUIRE_POSTGRES",
        ):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # a stray .env or chatops.db never leaks between tests
    yield


@pytest.fixture
def meta_fixture() -> "MetaFixtures":
    return MetaFixtures(META_FIXTURES)


class MetaFixtures:
    """Reads ../shared/fixtures/meta/*.json as the exact bytes Meta would sign."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def bytes(self, name: str) -> bytes:
        return (self.folder / f"{name}.json").read_bytes()

    def names(self, prefix: str = "") -> list[str]:
        return sorted(p.stem for p in self.folder.glob(f"{prefix}*.json"))
