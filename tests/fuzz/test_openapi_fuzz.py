"""schemathesis against the OpenAPI document a real `tessera serve` publishes.

Every operation (ingest, inference, OpenAI-compatible, admin) gets generated valid and
invalid requests, with the key that may call it (the admin key for `/v1/admin`, a tenant
key elsewhere). Checked for each: no 5xx, every 4xx says why in its body, and the server
and ingest worker are still running afterwards. `FUZZ_EXAMPLES` bounds the run (CI: a
few hundred requests in all); raise it locally for a longer hunt.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from .served import ADMIN_KEY, Deployment

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))  # per case: 320 requests in all


@pytest.fixture(scope="session")
def api_schema(served: Deployment) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{served.http}/openapi.json")
    schema.config.update(base_url=served.http)
    return schema


def operations(schema: schemathesis.BaseSchema) -> list[APIOperation[Any, Any, Any, Any]]:
    out = []
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # an operation schemathesis cannot read is a failure
            raise result.err()
        out.append(result.ok())
    return out


def rejection_reason(body: bytes) -> str | None:
    """The human-readable reason in a 4xx body: FastAPI's `detail`, the ingest
    `IngestRejected.detail`, or an OpenAI error's `message`; None when there is none."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    detail = doc.get("detail")
    if isinstance(detail, str) and detail.strip():
        return detail
    if isinstance(detail, list) and detail and all(
        isinstance(e, dict) and e.get("msg") for e in detail
    ):
        return "; ".join(str(e["msg"]) for e in detail)
    error = doc.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]:
        return str(error["message"])
    return None


def rejection_says_why(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """A schemathesis check: every 4xx carries a non-empty reason."""
    if 400 <= response.status_code < 500 and rejection_reason(response.content) is None:
        raise AssertionError(
            f"{response.status_code} without a reason: {response.content[:300]!r}"
        )
    return None


# Every path the server publishes; a new route fails `test_every_route_is_fuzzed` until
# it is listed here, so nothing is served unfuzzed.
ROUTES = {
    "GET /healthz", "POST /v1/events", "POST /v1/generate", "POST /v1/chat/completions",
    "POST /v1/completions", "GET /v1/admin/users/{tenant_id}/{user_id}/lineage",
    "GET /v1/admin/revisions/{revision_id}", "GET /v1/admin/requests/{request_id}",
    "POST /v1/admin/users/{tenant_id}/{user_id}/rollback",
    "POST /v1/admin/users/{tenant_id}/{user_id}/forget", "GET /admin/users/{tenant_id}/{user_id}",
    "GET /readyz", "GET /metrics", "GET /v1/models", "GET /v1/models/{model}",
    # The training API, portable adapters and webhooks.
    "POST /v1/admin/users/{tenant_id}/{user_id}/revisions",
    "GET /v1/admin/users/{tenant_id}/{user_id}/revisions",
    "GET /v1/admin/users/{tenant_id}/{user_id}/revisions/{revision_id}",
    "GET /v1/admin/revisions/{revision_id}/adapter",
    "POST /v1/admin/users/{tenant_id}/{user_id}/adapters",
    "PUT /v1/admin/tenants/{tenant_id}/webhook", "GET /v1/admin/tenants/{tenant_id}/webhook",
    "DELETE /v1/admin/tenants/{tenant_id}/webhook",
    "GET /v1/admin/tenants/{tenant_id}/webhook/deliveries",
}


def test_every_route_is_fuzzed(api_schema: schemathesis.BaseSchema) -> None:
    assert {op.label for op in operations(api_schema)} == ROUTES


# Invalid requests can only be generated where the schema constrains something: the
# JSON bodies. Path parameters are free strings (hostile ids are in test_hostile_http),
# and `/v1/events` reads its body raw (its hostile bodies are there too).
NEGATIVE_ROUTES = {
    "POST /v1/generate", "POST /v1/chat/completions", "POST /v1/completions",
    "POST /v1/admin/users/{tenant_id}/{user_id}/rollback",
    "POST /v1/admin/users/{tenant_id}/{user_id}/forget",
}
# Bodies schemathesis cannot build: an adapter import is a tar archive (its refusals of
# misfit and malformed archives are tested in tests/services/training).
NOT_GENERATED = {"POST /v1/admin/users/{tenant_id}/{user_id}/adapters"}
CASES = [(route, GenerationMode.POSITIVE) for route in sorted(ROUTES - NOT_GENERATED)] + [
    (route, GenerationMode.NEGATIVE) for route in sorted(NEGATIVE_ROUTES)
]


@pytest.mark.parametrize(("route", "mode"), CASES)
def test_no_server_error_and_every_rejection_says_why(
    api_schema: schemathesis.BaseSchema, served: Deployment, route: str, mode: GenerationMode
) -> None:
    (operation,) = [op for op in operations(api_schema) if op.label == route]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,  # CI sends the same requests every run; FUZZ_EXAMPLES widens it
        database=None,
    )
    def check(case: Case[Any]) -> None:
        key = ADMIN_KEY if case.path.startswith("/v1/admin") else served.key_a
        response = case.call(headers={"Authorization": f"Bearer {key}"}, timeout=60)
        case.validate_response(response, checks=[not_a_server_error, rejection_says_why])

    check()


def test_processes_survived_the_fuzzing(served: Deployment) -> None:
    """Runs after the generated tests (file order): nothing crashed."""
    served.assert_alive()
