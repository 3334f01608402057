"""gRPC `tessera.v1.Training`: the training API's twin (services/routes/revisions_api.py).

Same operations and access rules (services/training_api.py); this module only translates
protobuf in and status codes out. Imports and exports move files and stay on HTTP."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Final, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message

from tessera.schemas.api import MAX_ID_CHARS
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.schemas.training_api import RevisionSummary
from tessera.services.audit.access import Caller, resolve_caller
from tessera.services.auth import Forbidden, KeyAuthenticator, Unauthenticated, key_from_headers
from tessera.services.grpc_server import GrpcService
from tessera.services.training_api import (
    TrainingApi,
    TrainingNotFound,
    TrainingUnprocessable,
    one_revision,
    request_revision,
    revision_list,
)

SERVICE_NAME: Final = "tessera.v1.Training"
T = TypeVar("T")


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort raises")  # for type checkers


def _revision(s: RevisionSummary) -> tessera_pb2.TrainingRevision:
    return tessera_pb2.TrainingRevision(
        revision_id=s.revision_id, tenant_id=s.tenant_id, user_id=s.user_id, kind=s.kind,
        state=s.state, served=s.served, parent_revision_id=s.parent_revision_id or "",
        trigger=s.trigger, origin_json=json.dumps(s.origin, sort_keys=True) if s.origin else "",
        adapter_digest=s.adapter_digest, metrics=s.metrics, reasons=s.reasons,
        json=s.model_dump_json(),
    )


class TrainingServicer(tessera_pb2_grpc.TrainingServicer):
    def __init__(self, *, api: TrainingApi, auth: KeyAuthenticator) -> None:
        self._api = api
        self._auth = auth

    def _guarded(
        self, context: grpc.ServicerContext, call: Callable[[Caller], T], request: Message
    ) -> T:
        """Authenticate, bound the ids, run `call`, map our errors to status codes."""
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            caller = resolve_caller(self._auth, key_from_headers(metadata))
        except Unauthenticated as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        for fd, value in request.ListFields():
            if isinstance(value, str) and len(value) > MAX_ID_CHARS:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT,
                       f"{fd.name} has {len(value)} characters; the limit is {MAX_ID_CHARS}")
        try:
            return call(caller)
        except Forbidden as exc:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except TrainingNotFound as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except TrainingUnprocessable as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def RequestRevision(
        self, request: tessera_pb2.AdminUserRef, context: grpc.ServicerContext
    ) -> tessera_pb2.RevisionRequested:
        def run(caller: Caller) -> tessera_pb2.RevisionRequested:
            got = request_revision(self._api, caller, request.tenant_id, request.user_id)
            return tessera_pb2.RevisionRequested(
                tenant_id=got.tenant_id, user_id=got.user_id,
                up_to_position=got.up_to_position, revision_id=got.revision_id or "",
                json=got.model_dump_json())

        return self._guarded(context, run, request)

    def ListRevisions(
        self, request: tessera_pb2.AdminUserRef, context: grpc.ServicerContext
    ) -> tessera_pb2.TrainingRevisionList:
        def run(caller: Caller) -> tessera_pb2.TrainingRevisionList:
            got = revision_list(self._api, caller, request.tenant_id, request.user_id)
            return tessera_pb2.TrainingRevisionList(
                tenant_id=got.tenant_id, user_id=got.user_id,
                served_revision_id=got.served_revision_id or "",
                revisions=[_revision(r) for r in got.revisions], json=got.model_dump_json())

        return self._guarded(context, run, request)

    def GetRevision(
        self, request: tessera_pb2.TrainingRevisionRef, context: grpc.ServicerContext
    ) -> tessera_pb2.TrainingRevision:
        def run(caller: Caller) -> tessera_pb2.TrainingRevision:
            return _revision(one_revision(self._api, caller, request.tenant_id,
                                          request.user_id, request.revision_id))

        return self._guarded(context, run, request)


def training_grpc_service(*, api: TrainingApi, auth: KeyAuthenticator) -> GrpcService:
    """The `GrpcService` to mount with `grpc_server.start_grpc_server`."""
    servicer = TrainingServicer(api=api, auth=auth)
    return GrpcService(
        name=SERVICE_NAME,
        register=lambda server: tessera_pb2_grpc.add_TrainingServicer_to_server(servicer, server),
    )
