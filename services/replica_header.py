"""`X-Tessera-Replica` on every HTTP response: which serving replica answered.

Behind the proxy (infra/haproxy.cfg.template) users are spread over replicas by a
consistent hash of `X-Tessera-User`; this header lets clients, operators and tests see
where a request landed (affinity, failover) without asking the proxy.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

REPLICA_HEADER = "x-tessera-replica"


class ReplicaHeaderMiddleware:
    """Pure ASGI, so it also marks responses that outer layers or errors produce."""

    def __init__(self, app: ASGIApp, *, replica_id: str) -> None:
        self.app = app
        self._header = (REPLICA_HEADER.encode(), replica_id.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self._header]
            await send(message)

        await self.app(scope, receive, send_marked)
