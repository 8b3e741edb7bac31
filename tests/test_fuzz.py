"""Fuzzing: requests generated from our own OpenAPI document, with and without a key.

Every answer must be documented in the OpenAPI document (status, content type, body schema,
headers) and none may be a 5xx. The requests go in-process to the `secured` app (its own
database, so generated deletes cannot touch other tests' data); the admin key reaches every
endpoint, no key tests that every protected endpoint refuses.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.support import SCOPED_KEYS

# x 13 operations x 2 callers: about 400 requests in all.
EXAMPLES_PER_OPERATION = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class WithoutLifespan:
    """The app whose lifespan the `secured` client already runs: schemathesis's ASGI client starts a
    lifespan per request, which would load the models every time."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            self.requests += scope["type"] == "http"
            await self.app(scope, receive, send)
            return
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return


def fuzz(operation: APIOperation, key: str | None) -> None:
    headers = {} if key is None else {"X-API-Key": key}

    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # the same requests every run: a CI failure can be reproduced
        database=None,
    )
    @given(case=operation.as_strategy())
    def run(case: Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()


@pytest.mark.parametrize("key", [None, SCOPED_KEYS["admin"]], ids=["no key", "admin key"])
def test_generated_requests_get_documented_answers_and_no_5xx(secured: TestClient, key: str | None) -> None:
    app = WithoutLifespan(secured.app)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        fuzz(result.ok(), key)
    assert app.requests >= 150  # the schema kept generating: it did not collapse to a few cases
