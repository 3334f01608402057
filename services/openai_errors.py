"""OpenAI's error envelope on the OpenAI-compatible routes.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}` and raise typed
exceptions from the status (`openai.NotFoundError` for 404, ...). FastAPI answers
`{"detail": ...}`, which those clients show as a bare status line, so every error on the
OpenAI surface — the key gate's 401, unknown models' 404, validation's 422, quotas' 429 —
is rewritten here. Tessera's own routes keep their `detail` shape.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

OPENAI_PATHS: Final = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models"})
MODELS_PREFIX: Final = "/v1/models/"

# status -> (type, code) as OpenAI's own API answers them
_KINDS: Final[dict[int, tuple[str, str | None]]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_value"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}


def is_openai_path(path: str) -> bool:
    return path in OPENAI_PATHS or path.startswith(MODELS_PREFIX)


def error_body(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    kind, default_code = _KINDS.get(status, ("server_error", None))
    return {
        "error": {"message": message, "type": kind, "param": param, "code": code or default_code}
    }


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, message, param=param, code=code), status, headers)


async def http_error(request: Request, exc: Exception) -> Response:
    """HTTPException (route 404s, the engine's 503, unknown paths): OpenAI's shape on the
    OpenAI routes, FastAPI's default elsewhere."""
    if not isinstance(exc, StarletteHTTPException):
        raise exc
    path = request.url.path
    if exc.status_code == 404 and "route" not in request.scope and path.startswith("/v1/"):
        # An OpenAI endpoint Tessera lacks (/v1/embeddings, ...): say so in the envelope.
        message = (
            f"unknown endpoint {request.method} {path}; this server offers "
            "/v1/chat/completions, /v1/completions and /v1/models"
        )
        return error_response(404, message, code="unknown_url")
    if not is_openai_path(path):
        return await http_exception_handler(request, exc)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, str(exc.detail), headers=headers)


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """A 422 naming the first bad field as `param` (dotted, without the `body` prefix)."""
    errors = list(exc.errors())
    problems = []
    param = None
    for err in errors:
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        where = ".".join(loc) or "body"
        param = param or where
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(422, "; ".join(problems) or "invalid request", param=param)
