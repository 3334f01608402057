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

from typing import Any, Final

from fastapi import APIRouter, HTTPException, Request, Response, status
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from tessera.events.projections import RevisionRow
from tessera.schemas.events import PRIOR_USER_ID
from tessera.services.audit.access import Caller, require_tenant
from tessera.services.auth import Forbidden
from tessera.services.training_api import Api, ApiCaller, TrainingApi, iso
from tessera.workers.adapter_import import import_revision_id, stage_import
from tessera.workers.adapter_store import AdapterStoreError, load_adapter_blob
from tessera.workers.peft_format import PeftFormatError, export_tar, read_peft_tar
from tessera.workers.training_request import TrainingRequest

router = APIRouter(tags=["training"])
TAR: Final = "application/x-tar"


class RevisionSummary(BaseModel):
    revision_id: str
    tenant_id: str
    user_id: str
    kind: str
    state: str  # trained | evaluated | promoted | rejected | superseded | rolled_back | ...
    served: bool
    parent_revision_id: str | None
    trigger: str
    origin: dict[str, Any] | None  # {"kind": "import", "sha256": ...} for imports
    adapter_digest: str
    dataset_from: int
    dataset_to: int
    metrics: dict[str, float]
    baseline_revision_id: str | None
    baseline_metrics: dict[str, float]
    reasons: list[str]
    trained_at: str
    decided_at: str | None


class RevisionList(BaseModel):
    tenant_id: str
    user_id: str
    served_revision_id: str | None
    revisions: list[RevisionSummary]


class Requested(BaseModel):
    tenant_id: str
    user_id: str
    up_to_position: int
    revision_id: str | None  # known ahead for imports
    follow: str  # where the revision will be listed


def _summary(row: RevisionRow, served_id: str | None) -> RevisionSummary:
    hyper = row.provenance.get("hyperparameters") or {}
    origin = hyper.get("origin") if isinstance(hyper, dict) else None
    return RevisionSummary(
        revision_id=row.revision_id, tenant_id=row.tenant_id, user_id=row.user_id,
        kind=row.kind, state=row.state, served=row.revision_id == served_id,
        parent_revision_id=row.parent_revision_id,
        trigger=str(row.provenance.get("trigger", "")),
        origin=origin if isinstance(origin, dict) else None,
        adapter_digest=row.adapter_digest, dataset_from=row.dataset_from,
        dataset_to=row.dataset_to, metrics=row.metrics,
        baseline_revision_id=row.baseline_revision_id, baseline_metrics=row.baseline_metrics,
        reasons=row.reasons, trained_at=row.trained_at.isoformat(),
        decided_at=iso(row.decided_at),
    )


def _allowed(caller: Caller, tenant_id: str) -> None:
    try:
        require_tenant(caller, tenant_id)
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None


def _last_position(api: TrainingApi, tenant_id: str, user_id: str) -> int:
    if user_id == PRIOR_USER_ID:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "the tenant prior is trained nightly (or `tessera train ~prior`); "
                            "these routes are for a user's own revisions")
    row = api.store.get_user(tenant_id, user_id)
    if row is None or row.last_position is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no interaction events for {tenant_id}/{user_id} (since their "
                            "last forget): send some to /v1/events first")
    return int(row.last_position)


def _follow(tenant_id: str, user_id: str) -> str:
    return f"/v1/admin/users/{tenant_id}/{user_id}/revisions"


@router.post("/v1/admin/users/{tenant_id}/{user_id}/revisions", status_code=202,
             response_model=Requested)
def request_revision(tenant_id: str, user_id: str, api: Api, caller: ApiCaller) -> Requested:
    """Ask the trainers for a revision of the user on all their events so far. The
    answer comes by webhook (promoted or rejected) or by listing the revisions."""
    _allowed(caller, tenant_id)
    position = _last_position(api, tenant_id, user_id)
    api.publish(TrainingRequest(tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                                trigger="manual"))
    return Requested(tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                     revision_id=None, follow=_follow(tenant_id, user_id))


@router.get("/v1/admin/users/{tenant_id}/{user_id}/revisions", response_model=RevisionList)
def list_revisions(tenant_id: str, user_id: str, api: Api, caller: ApiCaller) -> RevisionList:
    """The user's revisions in training order, each with its state and gate reasons."""
    _allowed(caller, tenant_id)
    head = api.store.get_head(tenant_id, user_id)
    served = head.revision_id if head is not None else None
    rows = api.store.list_revisions(tenant_id, user_id)
    return RevisionList(tenant_id=tenant_id, user_id=user_id, served_revision_id=served,
                        revisions=[_summary(r, served) for r in rows])


def _revision(api: TrainingApi, caller: Caller, revision_id: str) -> RevisionRow:
    """The revision, or 404 also when it is another tenant's (ids are not probeable)."""
    row = (api.store.get_revision(revision_id)
           if len(revision_id) <= 128 and "\x00" not in revision_id else None)
    if row is None or (caller.tenant_id is not None and caller.tenant_id != row.tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no revision {revision_id!r}")
    return row


@router.get("/v1/admin/users/{tenant_id}/{user_id}/revisions/{revision_id}",
            response_model=RevisionSummary)
def get_revision(tenant_id: str, user_id: str, revision_id: str, api: Api,
                 caller: ApiCaller) -> RevisionSummary:
    _allowed(caller, tenant_id)
    row = _revision(api, caller, revision_id)
    if (row.tenant_id, row.user_id) != (tenant_id, user_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND,
                            f"no revision {revision_id!r} of {tenant_id}/{user_id}")
    head = api.store.get_head(tenant_id, user_id)
    return _summary(row, head.revision_id if head is not None else None)


@router.get("/v1/admin/revisions/{revision_id}/adapter", response_class=Response,
            responses={200: {"content": {TAR: {}}}})
def export_adapter(revision_id: str, api: Api, caller: ApiCaller) -> Response:
    """The revision's adapter as a tar of a peft folder: adapter_config.json and
    adapter_model.safetensors (whose sha256 is the revision's adapter digest)."""
    row = _revision(api, caller, revision_id)
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
    _allowed(caller, tenant_id)
    position = _last_position(api, tenant_id, user_id)
    body = await request.body()

    def stage() -> TrainingRequest:
        return stage_import(read_peft_tar(body), api.import_target(), api.adapters,
                            tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                            source="http", actor=caller.actor)

    try:
        staged = await run_in_threadpool(stage)
    except PeftFormatError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    await run_in_threadpool(api.publish, staged)
    ref = staged.adapter_import
    rid = import_revision_id(tenant_id, user_id, ref.adapter_digest) if ref else None
    return Requested(tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                     revision_id=rid, follow=_follow(tenant_id, user_id))
