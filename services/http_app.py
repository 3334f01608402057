"""The FastAPI application: one app, routers from `services/routes/<resource>.py`.

Each router module exposes `router`. Components (event producer, database, inference
engine, ...) are put on `app.state` by whoever builds the app; a route whose component
is absent answers 503 with a message saying which part is not running here.
"""

from __future__ import annotations

import importlib
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tessera.services.auth_gate import AuthGateMiddleware
from tessera.services.body_limit import DEFAULT_MAX_BODY_BYTES, BodyLimitMiddleware
from tessera.services.observability.http_metrics import ObservabilityMiddleware
from tessera.services.openai_errors import http_error, is_openai_path, validation_error
from tessera.services.replica_header import ReplicaHeaderMiddleware

# One module per resource; add yours here.
ROUTER_MODULES: list[str] = [
    "health",
    "metrics",
    "ingest",
    "generate",
    "openai_compat",
    "models",
    "admin",
    "revisions_api",
    "webhooks",
]


def _json_safe(value: Any) -> Any:
    """Echoed input made serialisable: JSON has no inf/nan, and bytes may not be UTF-8."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's default 422 echoes the input and fails (500) on values JSON cannot hold,
    such as `1e999` parsed as inf: answer the same 422 with those values as strings."""
    if isinstance(exc, RequestValidationError) and is_openai_path(request.url.path):
        return validation_error(exc)
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse(status_code=422, content={"detail": _json_safe(list(errors))})


def create_app(
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    replica_id: str | None = None,
    **components: Any,
) -> FastAPI:
    """Build the HTTP app. `components` become attributes of `app.state`; keyed routes
    without a valid key get 401, and bodies over `max_body_bytes` 413, before they are
    read. With `replica_id`, every response names it (X-Tessera-Replica)."""
    app = FastAPI(
        title="Tessera",
        version="0.1.0",
        description="Persistent personal LoRA models over one shared base model.",
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
    # Added after the body limit, so outside it: a request without a valid key is refused
    # before any layer or route reads its body (services/auth_gate.py).
    app.add_middleware(AuthGateMiddleware)
    if replica_id:
        # Outermost of all: refusals (401, 413) say which replica refused, too.
        app.add_middleware(ReplicaHeaderMiddleware, replica_id=replica_id)
    # Outermost: every answer (refusals included) is counted, timed and has a request id.
    app.add_middleware(ObservabilityMiddleware)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    for name, value in components.items():
        setattr(app.state, name, value)
    for module_name in ROUTER_MODULES:
        module = importlib.import_module(f"tessera.services.routes.{module_name}")
        app.include_router(module.router)
    return app
