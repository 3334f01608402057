"""The API key is checked before a request's body is read.

FastAPI reads and parses a route's body before it runs the route's dependencies, so
with authentication as a dependency anyone could make the server receive and parse up
to `max_body_bytes` (16 MiB) of JSON without a key. This ASGI layer sits outside
everything else (the body limit included) and, for the routes that need a key, resolves
it from the headers alone: format, then cache, then database (`KeyAuthenticator`). A
request without a valid key is answered `401` without a byte of its body being read;
one with a valid key goes on with its tenant recorded in the request's state, where
`auth.tenant_caller` picks it up instead of resolving the key a second time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from tessera.services.auth import (
    GATE_TENANT_STATE,
    KeyAuthenticator,
    Unauthenticated,
    key_from_headers,
)
from tessera.services.openai_errors import MODELS_PREFIX, error_body, is_openai_path

# Routes only a tenant key may call (each route module's paths).
TENANT_PATHS: Final = frozenset(
    {"/v1/events", "/v1/generate", "/v1/chat/completions", "/v1/completions", "/v1/models"}
)
# Routes the admin key or a tenant key may call (what a tenant may see is the route's).
AUDIT_PREFIX: Final = "/v1/admin/"


def is_keyed(path: str) -> bool:
    """Whether a request to `path` needs a key checked here (every `/v1/` route does)."""
    return path in TENANT_PATHS or path.startswith((AUDIT_PREFIX, MODELS_PREFIX))


class AuthGateMiddleware:
    """ASGI middleware: `401` before the body for keyed routes without a valid key."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        audit = path.startswith(AUDIT_PREFIX)
        # Starlette puts the application on the scope before its middleware runs.
        auth = getattr(getattr(scope.get("app"), "state", None), "auth", None)
        if not is_keyed(path) or not isinstance(auth, KeyAuthenticator):
            await self.app(scope, receive, send)  # routes answer 503 without `auth`
            return
        key = key_from_headers(_headers(scope))
        try:
            if not (audit and auth.is_admin(key)):
                tenant = auth.cached_tenant(key)
                if tenant is None:  # only the database can tell: off the event loop
                    tenant = await run_in_threadpool(auth.tenant_for_key, key)
                scope.setdefault("state", {})[GATE_TENANT_STATE] = tenant
        except Unauthenticated as exc:
            await _refuse(scope, send, str(exc))
            return
        await self.app(scope, receive, send)


def _headers(scope: Scope) -> Mapping[str, str]:
    """The request's headers (names lower-case, as ASGI gives them); the first of each
    name wins, as with starlette's `Request.headers`."""
    out: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        out.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return out


async def _refuse(scope: Scope, send: Send, detail: str) -> None:
    # OpenAI clients raise AuthenticationError with the message only from their envelope
    openai = is_openai_path(scope.get("path", ""))
    body = json.dumps(error_body(401, detail) if openai else {"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b"Bearer"),
    ]
    declared = _headers(scope)
    if declared.get("transfer-encoding") or declared.get("content-length", "0") != "0":
        headers.append((b"connection", b"close"))  # the body stays unread: no keep-alive
    await send({"type": "http.response.start", "status": 401, "headers": headers})
    await send({"type": "http.response.body", "body": body})
