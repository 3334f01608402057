"""gRPC `tessera.v1.Admin`: the admin HTTP API's twin. Same queries, same actions, same
access rules (services/audit/access.py); this module only translates protobuf in and
status codes out. Every response also carries `json`, the full answer as HTTP gives it."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Final, NoReturn, TypeVar

import grpc
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel

from tessera.schemas.api import MAX_ID_CHARS, MAX_REASON_CHARS
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.audit.access import Caller, require_admin, require_tenant, resolve_caller
from tessera.services.audit.backend import AdminBackend
from tessera.services.audit.queries import (
    AuditNotFound,
    RevisionNode,
    request_audit,
    revision_provenance,
    user_lineage,
)
from tessera.services.auth import Forbidden, KeyAuthenticator, Unauthenticated, key_from_headers
from tessera.services.corrective import CorrectiveError, NothingToForget
from tessera.services.grpc_server import GrpcService

SERVICE_NAME: Final = "tessera.v1.Admin"
T = TypeVar("T")


def _ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def _revision(node: RevisionNode) -> tessera_pb2.AuditRevision:
    return tessera_pb2.AuditRevision(
        revision_id=node.revision_id,
        tenant_id=node.tenant_id,
        user_id=node.user_id,
        kind=node.kind,
        parent_revision_id=node.parent_revision_id or "",
        state=node.state,
        served=node.served,
        adapter_digest=node.adapter_digest,
        dataset_from=node.dataset_from,
        dataset_to=node.dataset_to,
        metrics=node.metrics,
        reasons=node.reasons,
        trigger=node.trigger,
        trained_at=_ts(node.trained_at),
        decided_at=_ts(node.decided_at),
        children=node.children,
    )


def _too_long(request: Message) -> str | None:
    """Why a text field of `request` is over its limit (as HTTP's models bound them:
    `reason` to MAX_REASON_CHARS, ids to MAX_ID_CHARS), or None."""
    for fd, value in request.ListFields():
        if isinstance(value, str):
            limit = MAX_REASON_CHARS if fd.name == "reason" else MAX_ID_CHARS
            if len(value) > limit:
                return f"{fd.name} has {len(value)} characters; the limit is {limit}"
    return None


def _json(model: BaseModel) -> str:
    return model.model_dump_json()


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort raises")  # for type checkers


class AdminServicer(tessera_pb2_grpc.AdminServicer):
    def __init__(self, *, backend: AdminBackend, auth: KeyAuthenticator) -> None:
        self._backend = backend
        self._auth = auth

    def _guarded(
        self, context: grpc.ServicerContext, call: Callable[[Caller], T], request: Message
    ) -> T:
        """Authenticate, bound the request's text, run `call`, and map our errors to
        status codes in one place."""
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            caller = resolve_caller(self._auth, key_from_headers(metadata))
        except Unauthenticated as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        too_long = _too_long(request)
        if too_long is not None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, too_long)
        try:
            return call(caller)
        except Forbidden as exc:
            _abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        except (AuditNotFound, NothingToForget) as exc:
            _abort(context, grpc.StatusCode.NOT_FOUND, str(exc))
        except CorrectiveError as exc:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))

    def UserLineage(
        self, request: tessera_pb2.AdminUserRef, context: grpc.ServicerContext
    ) -> tessera_pb2.UserLineageResponse:
        def run(caller: Caller) -> tessera_pb2.UserLineageResponse:
            require_tenant(caller, request.tenant_id)
            lin = user_lineage(
                self._backend.store, request.tenant_id, request.user_id, scope=caller.scope
            )
            return tessera_pb2.UserLineageResponse(
                tenant_id=lin.tenant_id,
                user_id=lin.user_id,
                served_revision_id=lin.served.revision_id or "",
                served_source=lin.served.source,
                revisions=[_revision(n) for n in lin.revisions],
                roots=lin.roots,
                interactions=lin.interactions,
                forgotten_at=_ts(lin.forgotten_at),
                json=_json(lin),
            )

        return self._guarded(context, run, request)

    def RevisionProvenance(
        self, request: tessera_pb2.RevisionRef, context: grpc.ServicerContext
    ) -> tessera_pb2.RevisionProvenanceResponse:
        def run(caller: Caller) -> tessera_pb2.RevisionProvenanceResponse:
            prov = revision_provenance(
                self._backend.store, request.revision_id, scope=caller.scope
            )
            return tessera_pb2.RevisionProvenanceResponse(
                revision=_revision(prov.revision),
                provenance_json=json.dumps(prov.provenance, sort_keys=True),
                dataset_events=prov.dataset.count,
                json=_json(prov),
            )

        return self._guarded(context, run, request)

    def RequestAudit(
        self, request: tessera_pb2.RequestRef, context: grpc.ServicerContext
    ) -> tessera_pb2.RequestAuditResponse:
        def run(caller: Caller) -> tessera_pb2.RequestAuditResponse:
            req = request_audit(self._backend.store, request.request_id, scope=caller.scope)
            return tessera_pb2.RequestAuditResponse(
                request_id=req.request_id,
                tenant_id=req.tenant_id,
                user_id=req.user_id,
                revision_id=req.revision_id or "",
                adapter_digest=req.adapter_digest or "",
                source=req.source,
                at=_ts(req.at),
                json=_json(req),
            )

        return self._guarded(context, run, request)

    def Rollback(
        self, request: tessera_pb2.RollbackRequest, context: grpc.ServicerContext
    ) -> tessera_pb2.RollbackResponse:
        def run(caller: Caller) -> tessera_pb2.RollbackResponse:
            require_admin(caller, "rollback")
            result = self._backend.actions.rollback(
                request.tenant_id,
                request.user_id,
                to_revision_id=request.to_revision_id or None,
                reason=request.reason,
                actor=caller.actor,
            )
            return tessera_pb2.RollbackResponse(
                from_revision_id=result.from_revision_id or "",
                to_revision_id=result.to_revision_id or "",
                event_id=result.event_id,
                position=result.position,
                published=result.published,
                json=json.dumps(asdict(result)),
            )

        return self._guarded(context, run, request)

    def Forget(
        self, request: tessera_pb2.ForgetRequest, context: grpc.ServicerContext
    ) -> tessera_pb2.ForgetResponse:
        def run(caller: Caller) -> tessera_pb2.ForgetResponse:
            require_admin(caller, "forget")
            result = self._backend.actions.forget(
                request.tenant_id, request.user_id, actor=caller.actor, reason=request.reason
            )
            return tessera_pb2.ForgetResponse(
                tombstone_event_id=result.tombstone_event_id,
                position=result.position,
                forgotten_revision_ids=result.forgotten_revision_ids,
                deleted_digests=result.deleted_digests,
                published=result.published,
                json=json.dumps(asdict(result)),
            )

        return self._guarded(context, run, request)


def admin_grpc_service(*, backend: AdminBackend, auth: KeyAuthenticator) -> GrpcService:
    """The `GrpcService` to mount with `grpc_server.start_grpc_server`."""
    servicer = AdminServicer(backend=backend, auth=auth)
    return GrpcService(
        name=SERVICE_NAME,
        register=lambda server: tessera_pb2_grpc.add_AdminServicer_to_server(servicer, server),
    )
