"""Per-route HTTP metrics, a request id on every request, and one log line per request.

ASGI middleware, outermost, so the key gate's 401s and the body limit's 413s are counted
too. The route label is the route's template (`/v1/models/{model}`), never the raw
path, so label cardinality stays bounded; unmatched paths count as `unmatched`. The
request id is the caller's `X-Request-ID` when it is a short token, else a fresh one; it
is bound to the log context (every line logged while the request runs carries it) and
echoed as `X-Request-ID`.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
import weakref
from typing import Final

from prometheus_client import Counter, Histogram
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.workers.json_logs import log_context

log = logging.getLogger("tessera.http")

HTTP_REQUESTS = Counter(
    "tessera_http_requests",
    "HTTP requests by route, method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "tessera_http_request_seconds",
    "HTTP request latency, until the last byte of the response (streams included).",
    ["route", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
_REQUEST_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,64}")
NOT_LOGGED: Final = frozenset({"/metrics", "/healthz", "/readyz"})  # scraped every few s


def _route(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if isinstance(path, str):
        return path
    # Refused before routing (401, 413): the template the path would have matched.
    path = str(scope.get("path", ""))
    for template, pattern in _templates(scope.get("app")):
        if pattern.fullmatch(path):
            return template
    return "unmatched"


_TEMPLATES: weakref.WeakKeyDictionary[object, list[tuple[str, re.Pattern[str]]]] = (
    weakref.WeakKeyDictionary()
)


def _templates(app: object) -> list[tuple[str, re.Pattern[str]]]:
    """The app's documented path templates as regexes (built once per app)."""
    if app is None:
        return []
    if app not in _TEMPLATES:
        openapi = getattr(app, "openapi", None)
        paths = openapi()["paths"] if callable(openapi) else {}
        _TEMPLATES[app] = [(t, compile_path(t)[0]) for t in paths]
    return _TEMPLATES[app]


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", ())).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        status, revision = 500, None
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status, revision
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", ()))
                for name, value in headers:
                    if name.lower() == b"x-tessera-revision":
                        revision = value.decode("latin-1")
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        with log_context(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            finally:
                elapsed = time.perf_counter() - started
                route, method = _route(scope), str(scope.get("method", ""))
                HTTP_REQUESTS.labels(route, method, str(status)).inc()
                HTTP_SECONDS.labels(route, method).observe(elapsed)
                if route not in NOT_LOGGED:
                    log.info(
                        "%s %s %d",
                        method,
                        route,
                        status,
                        extra={
                            "route": route,
                            "status": status,
                            "duration_ms": round(elapsed * 1000, 1),
                            "revision_id": revision,
                        },
                    )
