"""gRPC `tessera.v1.Ingest`: translates protobuf in and status codes out; the work is
`IngestService`'s, so HTTP and gRPC accept and reject exactly the same batches."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any, Final, NoReturn

import grpc

from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.auth import KeyAuthenticator, Unauthenticated, key_from_headers
from tessera.services.grpc_server import GrpcService
from tessera.services.ingest.admission import LogBehind
from tessera.services.ingest.service import (
    DeadlineExceeded,
    IngestService,
    InvalidBatch,
    StreamUnavailable,
)
from tessera.services.quotas import QuotaExceeded

SERVICE_NAME: Final = "tessera.v1.Ingest"
ERRORS_METADATA_KEY: Final = "tessera-errors"
# Status messages and metadata travel in HTTP/2 headers: keep them well under 8 KiB.
_MAX_LISTED_ERRORS: Final = 50


def _turns(turns: Any) -> list[dict[str, str]]:
    return [{"role": t.role, "text": t.text} for t in turns]


def item_to_dict(item: tessera_pb2.IngestItem) -> dict[str, Any]:
    """A protobuf item as the JSON-shaped dict the API model validates. Unset optional
    fields are left out, so "missing" errors read the same as over HTTP."""
    out: dict[str, Any] = {"user_id": item.user_id}
    if item.event_id:
        out["event_id"] = item.event_id
    if item.correlation_id:
        out["correlation_id"] = item.correlation_id
    if item.HasField("occurred_at"):
        try:
            out["occurred_at"] = item.occurred_at.ToDatetime(tzinfo=UTC)
        except (ValueError, OverflowError):
            # Outside what a datetime can hold: handed on as text, so the model's
            # validation reports it against this item's field like any bad timestamp.
            ts = item.occurred_at
            out["occurred_at"] = f"out-of-range timestamp seconds={ts.seconds} nanos={ts.nanos}"
    kind = item.WhichOneof("payload")
    if kind == "exchange":
        ex = item.exchange
        out.update(type="exchange", prompt=ex.prompt, response=ex.response)
        out["context"] = _turns(ex.context)
    elif kind == "feedback":
        fb = item.feedback
        out.update(type="feedback", target_event_id=fb.target_event_id)
        if fb.HasField("rating"):
            out["rating"] = fb.rating
        if fb.HasField("edited_response"):
            out["edited_response"] = fb.edited_response
    elif kind == "text":
        out.update(type="text", text=item.text.text, context=_turns(item.text.context))
    return out


class IngestServicer(tessera_pb2_grpc.IngestServicer):
    def __init__(self, *, service: IngestService, auth: KeyAuthenticator) -> None:
        self._service = service
        self._auth = auth

    def Ingest(
        self, request: tessera_pb2.IngestRequest, context: grpc.ServicerContext
    ) -> tessera_pb2.IngestResponse:
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            tenant_id = self._auth.tenant_for_key(key_from_headers(metadata))
        except Unauthenticated as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        body = {"events": [item_to_dict(item) for item in request.events]}
        try:
            # The client's deadline bounds the wait for the broker: its thread is freed
            # when the client stops waiting, not after the service's own ack timeout.
            ids = self._service.ingest(
                body, tenant_id=tenant_id, deadline_s=context.time_remaining()
            )
        except InvalidBatch as exc:
            listed = exc.errors[:_MAX_LISTED_ERRORS]
            context.set_trailing_metadata(
                ((ERRORS_METADATA_KEY, json.dumps([e.model_dump(mode="json") for e in listed])),)
            )
            lines = [_located(e.index, e.field) + f": {e.problem}" for e in listed]
            more = len(exc.errors) - len(listed)
            if more > 0:
                lines.append(f"... and {more} more")
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"{exc.detail}: " + "; ".join(lines))
        except StreamUnavailable as exc:
            _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        except DeadlineExceeded as exc:
            _abort(context, grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        except (LogBehind, QuotaExceeded) as exc:  # over the tenant's quota, or log behind
            _abort(context, grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        return tessera_pb2.IngestResponse(accepted=[str(i) for i in ids])


def _located(index: int | None, field: str) -> str:
    return field if index is None else f"events[{index}].{field}"


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort raises")  # for type checkers: abort never returns


def ingest_grpc_service(*, service: IngestService, auth: KeyAuthenticator) -> GrpcService:
    """The `GrpcService` to mount on the server built by `grpc_server.start_grpc_server`."""
    servicer = IngestServicer(service=service, auth=auth)
    return GrpcService(
        name=SERVICE_NAME,
        register=lambda server: tessera_pb2_grpc.add_IngestServicer_to_server(
            servicer, server
        ),
    )
