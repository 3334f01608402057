"""`GET /healthz`: the process answers, and which components it runs (liveness).
`GET /readyz`: PostgreSQL, the broker and the model are usable (readiness): 200, or 503
naming what failed (services/observability/readiness.py)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tessera.services.observability.readiness import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and the components this server runs")
async def healthz(request: Request) -> dict[str, object]:
    components = getattr(request.app.state, "components", [])
    return {"status": "ok", "components": list(components)}


@router.get(
    "/readyz",
    summary="Readiness: PostgreSQL, the broker and the model",
    responses={503: {"description": "Not ready: `failed` names the checks that failed."}},
)
async def readyz(request: Request) -> JSONResponse:
    readiness = getattr(request.app.state, "readiness", None)
    if not isinstance(readiness, Readiness):  # nothing to depend on was configured
        return JSONResponse({"status": "ready", "checks": {}, "failed": []})
    report = await asyncio.to_thread(readiness.report)
    body = {
        "status": "ready" if report.ready else "not ready",
        "checks": report.checks,
        "failed": report.failed,
    }
    return JSONResponse(body, status_code=200 if report.ready else 503)
