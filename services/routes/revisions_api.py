"""Training API: ask for a revision, follow it, move adapters in and out (peft format).

    POST /v1/admin/users/{tenant}/{user}/revisions          request a revision (202)
    GET  /v1/admin/users/{tenant}/{user}/revisions          the user's revisions + state
    GET  /v1/admin/users/{tenant}/{user}/revisions/{id}     one of them
    POST /v1/admin/users/{tenant}/{user}/adapters           import a peft adapter (tar body)
    GET  /v1/admin/revisions/{id}/adapter                   export as a peft folder (tar)

A request publishes the same `TrainingRequest` as `tessera train` on the training-requests
topic; an import stages the adapter and publishes a request carrying it
(workers/adapter_import.py); either way the trainer group gates the candidate and the
decision reaches the tenant's webhook (services/webhooks/). The tar holds
`adapter_config.json` and `adapter_model.safetensors` (`tar -x` it, then
`PeftModel.from_pretrained(base, folder)`); uploads may be gzip'd. The admin key may act
for any tenant, a tenant key for its own users; other tenants' revisions read as absent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Final, TypeVar

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from tessera.schemas.training_api import Requested, RevisionList, RevisionSummary
from tessera.services.audit.access import require_tenant
from tessera.services.auth import Forbidden
from tessera.services.training_api import (
    Api,
    ApiCaller,
    TrainingNotFound,
    TrainingUnprocessable,
    follow_path,
    last_position,
    one_revision,
    request_revision,
    revision_list,
    visible_revision,
)
from tessera.workers.adapter_import import import_revision_id, stage_import
from tessera.workers.adapter_store import AdapterStoreError, load_adapter_blob
from tessera.workers.peft_format import PeftFormatError, export_tar, read_peft_tar
from tessera.workers.training_request import TrainingRequest

router = APIRouter(tags=["training"])
TAR: Final = "application/x-tar"
T = TypeVar("T")


@contextmanager
def _statuses() -> Iterator[None]:
    """The operations' errors as HTTP statuses, in one place."""
    try:
        yield
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None
    except TrainingNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (TrainingUnprocessable, PeftFormatError) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None


def _run(call: Callable[[], T]) -> T:
    with _statuses():
        return call()


@router.post("/v1/admin/users/{tenant_id}/{user_id}/revisions", status_code=202,
             response_model=Requested)
def post_revision(tenant_id: str, user_id: str, api: Api, caller: ApiCaller) -> Requested:
    """Ask the trainers for a revision of the user on all their events so far. The
    answer comes by webhook (promoted or rejected) or by listing the revisions."""
    return _run(lambda: request_revision(api, caller, tenant_id, user_id))


@router.get("/v1/admin/users/{tenant_id}/{user_id}/revisions", response_model=RevisionList)
def list_revisions(tenant_id: str, user_id: str, api: Api, caller: ApiCaller) -> RevisionList:
    """The user's revisions in training order, each with its state and gate reasons."""
    return _run(lambda: revision_list(api, caller, tenant_id, user_id))


@router.get("/v1/admin/users/{tenant_id}/{user_id}/revisions/{revision_id}",
            response_model=RevisionSummary)
def get_revision(tenant_id: str, user_id: str, revision_id: str, api: Api,
                 caller: ApiCaller) -> RevisionSummary:
    return _run(lambda: one_revision(api, caller, tenant_id, user_id, revision_id))


@router.get("/v1/admin/revisions/{revision_id}/adapter", response_class=Response,
            responses={200: {"content": {TAR: {}}}})
def export_adapter(revision_id: str, api: Api, caller: ApiCaller) -> Response:
    """The revision's adapter as a tar of a peft folder: adapter_config.json and
    adapter_model.safetensors (whose sha256 is the revision's adapter digest)."""
    row = _run(lambda: visible_revision(api, caller, revision_id))
    if row.state == "forgotten":
        raise HTTPException(status.HTTP_410_GONE, f"revision {revision_id!r} was forgotten")
    try:
        data = api.adapters.read_bytes(row.adapter_digest)
        _, cfg = load_adapter_blob(api.adapters.path(row.adapter_digest))
    except AdapterStoreError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    body = export_tar(data, cfg, base_model_id=row.base_model_id)
    return Response(body, media_type=TAR, headers={
        "Content-Disposition": f'attachment; filename="{revision_id}.tar"',
        "X-Adapter-Digest": row.adapter_digest})


@router.post("/v1/admin/users/{tenant_id}/{user_id}/adapters", status_code=202,
             response_model=Requested,
             openapi_extra={"requestBody": {"content": {TAR: {}, "application/gzip": {}}}})
async def import_adapter(tenant_id: str, user_id: str, request: Request, api: Api,
                         caller: ApiCaller) -> Requested:
    """Bring a peft adapter (tar of adapter_config.json + adapter_model.safetensors) in
    as a candidate revision of the user, gated like a trained one. 422 says why an
    adapter does not fit (base model, rank, targets, keys, shapes)."""
    with _statuses():
        require_tenant(caller, tenant_id)
        position = last_position(api, tenant_id, user_id)
    body = await request.body()

    def stage() -> TrainingRequest:
        return stage_import(read_peft_tar(body), api.import_target(), api.adapters,
                            tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                            source="http", actor=caller.actor)

    with _statuses():
        staged = await run_in_threadpool(stage)
    await run_in_threadpool(api.publish, staged)
    ref = staged.adapter_import
    rid = import_revision_id(tenant_id, user_id, ref.adapter_digest) if ref else None
    return Requested(tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                     revision_id=rid, follow=follow_path(tenant_id, user_id))
