"""A database URL that cannot be read is a setting error (exit 2) whose message never shows the password."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from chatops.cli.app import app
from chatops.config.settings import mask_url
from chatops.db.connect import create_db_engine
from chatops.errors import ConfigError

PASSWORD = "Zq9xKw7vPm"

# Shapes an operator types by mistake: a port that is not a number, a password holding @ : / ? #, a broken IPv6
# literal, bad percent-escapes, non-ASCII, a port in the query string. None may reach a traceback.
MALFORMED = [
    f"postgresql://u:{PASSWORD}@127.0.0.1:notaport/db",
    f"postgresql://u:{PASSWORD}@127.0.0.1:/db",
    f"postgresql://u:{PASSWORD}@127.0.0.1:1:2/db",
    f"postgresql://u:{PASSWORD}:x@127.0.0.1:x/db",
    f"postgresql://u:{PASSWORD}@pw@127.0.0.1:5x/db",
    f"postgresql://u:{PASSWORD[:4]}@{PASSWORD[4:]}@127.0.0.1:5x/db",
    f"postgresql://u:{PASSWORD}@[::1:5432/db",
    f"postgresql://u%:{PASSWORD}%zz@127.0.0.1:x/db",
    f"postgresql://u:{PASSWORD}é€@127.0.0.1:x/db",
    f"postgresql+psycopg2://u:{PASSWORD}@127.0.0.1:x/db",
    f"postgresql://u:{PASSWORD}@127.0.0.1:5432/db?port=abc",
    f"postgresql://127.0.0.1:1/db?password={PASSWORD}&port=x",
    f"sqlite://u:{PASSWORD}@127.0.0.1:x/db",
]

# URLs that parse but lead nowhere: a connection error (exit 1), the password masked all the same.
UNREACHABLE = [
    f"postgresql://u:{PASSWORD}@127.0.0.1:1/db",
    f"postgresql://u:{PASSWORD}/x?y#z@127.0.0.1:1/db",
    f"postgresql://127.0.0.1:1/db?password={PASSWORD}",
    f"postgresql://u:{PASSWORD}@127.0.0.1:99999/db",
]


def _fragments(secret: str) -> list[str]:
    """Every 4-character piece of ``secret``: a message quoting part of a password leaks it too."""
    return [secret[i : i + 4] for i in range(len(secret) - 3)]


def _run(url: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--database-url", url, "migrate", "--status"])
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{url!r} raised {result.exception!r}"
    )
    return result.exit_code, result.stdout + result.stderr


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_database_url_is_a_setting_error_without_the_password(url: str) -> None:
    code, output = _run(url)
    assert code == 2, output
    assert output.startswith("Error: CHATOPS_DATABASE_URL: cannot parse"), output
    assert "***" in output
    assert "Hint: expected sqlite:///path/to.db or postgresql://" in output
    assert not [piece for piece in _fragments(PASSWORD) if piece in output], output


@pytest.mark.parametrize("url", UNREACHABLE)
def test_an_unreachable_database_is_named_without_the_password(url: str) -> None:
    code, output = _run(url)
    assert code == 1, output
    assert output.startswith("Error: cannot use the database (PostgreSQL at 127.0.0.1:"), output
    assert not [piece for piece in _fragments(PASSWORD) if piece in output], output


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("postgresql://app:p@ss:w/rd@db:5432/chatops", "postgresql://app:***@db:5432/chatops"),
        ("postgresql://:secret@/chatops", "postgresql://:***@/chatops"),
        (
            "postgresql://app@db/chatops?password=secret&sslmode=require",
            "postgresql://app@db/chatops?password=***&sslmode=require",
        ),
        ("app:secret@db/chatops", "app:***@db/chatops"),
        ("postgresql://db/chatops?options=a@b", "postgresql://db/chatops?options=a@b"),
    ],
)
def test_mask_url_hides_a_password_however_the_url_is_written(url: str, masked: str) -> None:
    assert mask_url(url) == masked


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_is_refused_with_a_hint(url: str) -> None:
    with pytest.raises(ConfigError, match="is an in-memory SQLite database; chatops needs a file") as info:
        create_db_engine(url)
    assert info.value.hint is not None
    assert "sqlite:///chatops.db" in info.value.hint
