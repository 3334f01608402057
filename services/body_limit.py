"""A cap on request body size for every HTTP route, enforced before the body is read.

Without it a client can make the server buffer any amount: the ingest route reads the
whole body before parsing it, and so do FastAPI's body parameters. A request that
declares a longer `Content-Length` is answered `413` at once, without reading a byte of
it; a body sent without one (chunked) is counted as it streams in and cut off at the
limit. The answer has the same shape as the ingest API's other rejections.
"""

from __future__ import annotations

import json
from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tessera.services.openai_errors import error_body, is_openai_path

DEFAULT_MAX_BODY_BYTES: Final = 16 * 1024 * 1024


class BodyTooLarge(Exception):
    """The body outgrew the limit while streaming in."""


class BodyLimitMiddleware:
    """ASGI middleware: `413` for bodies over `max_bytes`."""

    def __init__(self, app: ASGIApp, *, max_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send, f"the body declares {declared} bytes")
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyTooLarge:
            if started:  # too late to answer; the connection is dropped instead
                raise
            await self._refuse(scope, send, f"the body exceeds {self.max_bytes} bytes")

    async def _refuse(self, scope: Scope, send: Send, what: str) -> None:
        limit = self.max_bytes
        detail = f"request body too large: {what}; the limit is {limit} bytes"
        answer: dict[str, object] = {
            "detail": detail,
            "errors": [{"index": None, "field": "body", "problem": detail, "type": "too_long"}],
        }
        if is_openai_path(str(scope.get("path", ""))):  # OpenAI clients read their envelope
            answer = error_body(413, detail)
        body = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),  # the unread rest of the body stays unread
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # malformed: the server's HTTP parser answers that itself
    return None
