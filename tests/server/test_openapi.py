"""schemathesis against /openapi.json (in-process ASGI): no 5xx, documented status codes and bodies."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.conftest import Collector

CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]
EXAMPLES_PER_OPERATION = 8


def test_every_operation_answers_within_its_schema(collector: Collector) -> None:
    device = collector.enroll()
    collector.send(device.report())
    schema = schemathesis.openapi.from_asgi("/openapi.json", collector.client.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        def exercise(case: Any) -> None:
            response = case.call(headers={"Authorization": f"Bearer {collector.admin_token}"})
            try:
                case.validate_response(response, checks=CHECKS)
            except AssertionError as exc:  # schemathesis failures are AssertionErrors
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}: {str(exc)[:300]}")

        exercise()
    assert operations >= 20
    assert not failures, "\n".join(failures[:20])
