"""Which database failures are outages (retry later) and which are refused values (permanent)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from chatops.db.connect import create_db_engine, storage_errors
from chatops.errors import StorageError, UnstorableError
from chatops.text import clean_text, clean_value

REFUSED = [  # (value, statement, the databases that refuse it)
    ("a\ud800b", "SELECT :v", {"sqlite", "postgresql"}),  # no UTF-8 form: the drivers refuse it
    ("a\x00b", "SELECT :v", {"postgresql"}),  # PostgreSQL text cannot hold NUL (SQLite can)
    (10**30, "SELECT :v", {"sqlite"}),  # beyond SQLite's 64-bit integers (PostgreSQL takes it as numeric)
    ("12x", "SELECT CAST(:v AS BIGINT)", {"postgresql"}),  # a server-side DataError
]


@pytest.mark.parametrize(("value", "statement", "refused_by"), REFUSED, ids=["surrogate", "nul", "int", "cast"])
def test_a_value_the_database_refuses_is_unstorable_not_an_outage(
    db: sa.Engine, value: object, statement: str, refused_by: set[str]
) -> None:
    if db.dialect.name not in refused_by:
        pytest.skip(f"{db.dialect.name} accepts it")
    with pytest.raises(UnstorableError, match="the database refused a value"), storage_errors(db), db.connect() as c:
        c.execute(sa.text(statement), {"v": value})


def test_a_value_the_json_column_cannot_encode_is_unstorable(db: sa.Engine) -> None:
    statement = sa.text("SELECT :v").bindparams(sa.bindparam("v", type_=sa.JSON))
    with pytest.raises(UnstorableError, match="not JSON serializable"), storage_errors(db), db.connect() as c:
        c.execute(statement, {"v": {"when": object()}})


def test_an_unreachable_server_is_an_outage() -> None:
    engine = create_db_engine("postgresql://chatops:secret@127.0.0.1:1/chatops")
    expected = r"cannot use the database \(PostgreSQL at 127.0.0.1:1/chatops\)"
    with pytest.raises(StorageError, match=expected) as info, storage_errors(engine), engine.connect():
        pass
    assert "secret" not in str(info.value)
    assert not isinstance(info.value, UnstorableError)


def test_cleaned_text_is_stored_and_read_back(db: sa.Engine) -> None:
    hostile = "a\x00b\ud800c\udfff😀"
    with storage_errors(db), db.connect() as c:
        stored = c.execute(sa.text("SELECT :v"), {"v": clean_text(hostile)}).scalar_one()
    assert stored == "a\ufffdb\ufffdc\ufffd😀"


def test_clean_value_cleans_keys_and_nested_strings_and_leaves_the_rest() -> None:
    assert clean_value({"\ud800": ["x\x00", ("y", 1, None, 2.5)]}) == {"\ufffd": ["x\ufffd", ("y", 1, None, 2.5)]}
    clean = "nothing to do"
    assert clean_text(clean) is clean
