"""schemathesis against /api/v1/openapi.json, bounded: generated requests never get a 500, and every answer matches
the document (status code declared, body valid against its schema, Content-Type)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings

from tests.admin import AdminHarness

schemathesis = pytest.importorskip("schemathesis")

EXAMPLES = 30  # per operation: the whole run takes about 10 s on SQLite


@pytest.fixture
def admin(tmp_path: Path, database_url: str, db: sa.Engine) -> Iterator[AdminHarness]:
    harness = AdminHarness(tmp_path, database_url, db, api_rate_limit="100000/minute")
    harness.send("hello")
    harness.drain()
    harness.send("I need a human")
    harness.drain()
    yield harness
    harness.runtime.variables.runner.close()


@pytest.mark.parametrize("backend", ["sqlite"])
def test_generated_requests_get_documented_answers_and_no_500(admin: AdminHarness) -> None:
    from schemathesis.checks import (
        content_type_conformance,
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", admin.app)
    headers = {"Authorization": f"Bearer {admin.keys['admin']}"}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        if operation.path.endswith(("/revoke", "/rotate", "/reload")):
            continue  # they would revoke the key the run uses, or reload the files mid-run; covered by tests

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=headers)
            case.validate_response(response, checks=checks)

        run()
