"""What both inference routers share: the engine dependency and error -> HTTP status."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.requests import (
    EngineError,
    EngineStoppedError,
    GenerateRequest,
    Generation,
    InvalidRequestError,
    QueueFullError,
    QuotaExceededError,
    RequestTimeoutError,
)
from tessera.services.quotas import retry_after_header

RETRY_AFTER_S = "1"


def _engine(request: Request) -> InferenceEngine:
    engine = getattr(request.app.state, "inference", None)
    if not isinstance(engine, InferenceEngine):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "inference is not running in this server; start it with `tessera serve` "
            "(without `--without inference`)",
        )
    return engine


Engine = Annotated[InferenceEngine, Depends(_engine)]


def status_for(exc: EngineError) -> int:
    """The HTTP status of an engine error."""
    if isinstance(exc, QuotaExceededError):
        return status.HTTP_429_TOO_MANY_REQUESTS
    if isinstance(exc, QueueFullError | EngineStoppedError):
        return status.HTTP_503_SERVICE_UNAVAILABLE
    if isinstance(exc, RequestTimeoutError):
        return status.HTTP_504_GATEWAY_TIMEOUT
    if isinstance(exc, InvalidRequestError):
        return status.HTTP_400_BAD_REQUEST
    return status.HTTP_500_INTERNAL_SERVER_ERROR


def headers_for(exc: EngineError) -> dict[str, str]:
    if isinstance(exc, QuotaExceededError):
        return {"Retry-After": retry_after_header(exc.retry_after_s)}
    return {"Retry-After": RETRY_AFTER_S} if isinstance(exc, QueueFullError) else {}


async def submit(engine: InferenceEngine, request: GenerateRequest) -> Generation:
    """Submit from a route: the revision lookup may touch the database, so it runs in a
    worker thread; results arrive on this event loop."""
    loop = asyncio.get_running_loop()
    return await asyncio.to_thread(engine.submit, request, loop=loop)
