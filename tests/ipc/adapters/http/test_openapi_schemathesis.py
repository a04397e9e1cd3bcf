"""Property-based requests against the live HTTP face, from its own /openapi.json
(schemathesis): no 5xx, and every response (status, content type, body, headers) is the
one the document promises. Bounded examples per operation, to keep CI time short.

Not run by scripts/test-minimums: schemathesis needs newer pytest and hypothesis than the
declared minimums (it is in the ``contract-tests`` extra, installed by scripts/setup).
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from jeeves_control_tower.ipc.adapters.http import create_app
from tests.ipc.adapters.http.messages import Wired, registry

WIRED = Wired()
APP = create_app(
    WIRED.coordinator,
    registry=registry(),
    token="t",
    timeout=2.0,
    max_body_bytes=4096,
    metrics=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, headers={"Authorization": "Bearer t"})
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
def test_face_keeps_its_contract(case: schemathesis.Case[Any]) -> None:
    case.call_and_validate(headers={"Authorization": "Bearer t"}, checks=CHECKS)
