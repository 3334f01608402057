"""The gRPC twin of `auth_gate`: a keyed call without a usable key is refused before its
request message is decoded.

A server interceptor runs when a call arrives, before gRPC reads and parses the request
message for the handler. For the keyed services (Ingest and Inference need a tenant key;
Admin the admin key or a tenant key) it refuses, UNAUTHENTICATED, a call with no key, a
malformed key or a key whose look-up failed moments ago (`KeyAuthenticator`'s caches):
the refusing handler takes the message as raw bytes and never parses it. The interceptor
runs on the server's dispatch thread, so it never waits for the database: a key only the
database can judge goes on to its handler, which looks it up on a pool thread (a failure
is then remembered, and the key's next call is refused here).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Final, NoReturn

import grpc

from tessera.services.auth import KeyAuthenticator, Unauthenticated, key_from_headers

TENANT_SERVICES: Final = ("/tessera.v1.Ingest/", "/tessera.v1.Inference/")
AUDIT_SERVICES: Final = ("/tessera.v1.Admin/",)

# grpc ships no type information: a method handler (`grpc.RpcMethodHandler`) is Any here.
Handler = Any


class KeyGateInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]  # grpc is untyped
    def __init__(self, auth: KeyAuthenticator) -> None:
        self._auth = auth

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Handler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        method: str = handler_call_details.method
        audit = method.startswith(AUDIT_SERVICES)
        handler = continuation(handler_call_details)
        if handler is None or not (audit or method.startswith(TENANT_SERVICES)):
            return handler
        metadata = {
            k.lower(): v
            for k, v in (handler_call_details.invocation_metadata or ())
            if isinstance(v, str)
        }
        key = key_from_headers(metadata)
        if audit and self._auth.is_admin(key):
            return handler
        try:
            self._auth.cached_tenant(key)  # never blocks; None: the handler looks it up
        except Unauthenticated as exc:
            return _refusing(handler, str(exc))
        return handler


def _refusing(handler: Handler, message: str) -> Handler:
    """A handler of the same shape that refuses the call without parsing its message
    (no request deserializer: whatever arrived stays bytes)."""

    def refuse(_request: object, context: grpc.ServicerContext) -> NoReturn:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        raise AssertionError("context.abort raises")  # for type checkers

    def refuse_stream(request: object, context: grpc.ServicerContext) -> Iterator[Any]:
        refuse(request, context)

    make = _HANDLER_OF[(bool(handler.request_streaming), bool(handler.response_streaming))]
    behaviour = refuse_stream if handler.response_streaming else refuse
    return make(behaviour, response_serializer=handler.response_serializer)


_HANDLER_OF: Final[dict[tuple[bool, bool], Callable[..., Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}
