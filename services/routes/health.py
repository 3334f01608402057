"""`GET /healthz`: the process answers, and which components it runs."""

from __future__ import annotations

from fastapi import APIRouter, Request

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="Liveness and the components this server runs")
async def healthz(request: Request) -> dict[str, object]:
    components = getattr(request.app.state, "components", [])
    return {"status": "ok", "components": list(components)}
