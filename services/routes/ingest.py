"""`POST /v1/events`: a batch of interactions in, `202` once they are on the stream.

The body is read as raw bytes and validated in one pass by pydantic's Rust JSON parser
(`IngestService.parse`) rather than through FastAPI's body parameter, which would parse
the JSON in Python first and validate afterwards: for 1,000-item batches that is most of
the request's cost. The OpenAPI document still describes the body (`openapi_extra`).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from fastapi.responses import JSONResponse

from tessera.schemas.api import IngestAccepted, IngestRejected, IngestRequest, ItemError
from tessera.services.auth import TenantCaller
from tessera.services.ingest.admission import LogBehind
from tessera.services.ingest.service import IngestService, InvalidBatch, StreamUnavailable
from tessera.services.quotas import QuotaExceeded

router = APIRouter(tags=["ingest"])

_REQUEST_SCHEMA: dict[str, Any] = IngestRequest.model_json_schema(
    ref_template="#/components/schemas/{model}"
)


def _service(request: Request) -> IngestService:
    service = getattr(request.app.state, "ingest", None)
    if not isinstance(service, IngestService):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "ingest is not running in this server; start it with `tessera serve`",
        )
    return service


def _rejected(code: int, detail: str, errors: list[ItemError]) -> JSONResponse:
    body = IngestRejected(detail=detail, errors=errors).model_dump(mode="json")
    return JSONResponse(body, status_code=code)


@router.post(
    "/v1/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestAccepted,
    summary="Ingest a batch of interactions",
    responses={
        401: {"description": "No API key, or an unknown or revoked one."},
        413: {
            "model": IngestRejected,
            "description": "More events than the batch limit, or an event whose stream "
            "record would exceed `TESSERA_MAX_RECORD_BYTES` (the broker could never take it).",
        },
        422: {
            "model": IngestRejected,
            "description": "Invalid items (the stream worker's rules included, e.g. no "
            "U+0000 in text); nothing was accepted.",
        },
        429: {
            "model": IngestRejected,
            "description": "The tenant is over its events-per-second quota, or the event "
            "log is too far behind what was accepted (admission control, "
            "`TESSERA_INGEST_MAX_LAG_S`); retry the same batch after Retry-After.",
        },
        503: {"description": "The event stream did not acknowledge; retry the same batch."},
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _REQUEST_SCHEMA}},
        }
    },
)
async def ingest_events(request: Request, tenant_id: TenantCaller) -> Response:
    """Validate every item, publish all to `tessera.interactions` keyed `tenant/user`,
    and answer `202` with the event ids once the broker acknowledged them. A batch with
    any invalid item is rejected whole (`422`) with every problem listed."""
    service = _service(request)
    try:
        body = await request.body()
        ids = await service.ingest_async(body, tenant_id=tenant_id)
    except InvalidBatch as exc:
        code = (
            status.HTTP_413_CONTENT_TOO_LARGE
            if exc.too_large
            else status.HTTP_422_UNPROCESSABLE_CONTENT
        )
        return _rejected(code, exc.detail, exc.errors)
    except StreamUnavailable as exc:
        return _rejected(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc), [])
    except (LogBehind, QuotaExceeded) as exc:
        shed = _rejected(status.HTTP_429_TOO_MANY_REQUESTS, str(exc), [])
        # Retry-After holds whole seconds; the detail says the finer hint.
        shed.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
        return shed
    # Serialised directly: 1,000 UUIDs through FastAPI's response validation cost more
    # than the rest of the response path.
    accepted = IngestAccepted(accepted=ids, count=len(ids))
    return Response(
        accepted.model_dump_json(),
        status_code=status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )
