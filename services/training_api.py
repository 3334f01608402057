"""What the training API and webhook routes need, and the API's operations.

Routes (services/routes/revisions_api.py, services/routes/webhooks.py) and the gRPC
servicer (services/grpc_training.py) use the `TrainingApi` that
services/training_component.py builds (HTTP: `app.state.training`). It holds the event
store (read side), the adapter store, the webhook store, how to publish a training
request (the same message and topic as `tessera train`) and, resolved on first use, what
an imported adapter must fit. No model is needed: the trainer group gates imports.

Who may call: the admin key for any tenant; a tenant key for its own tenant's users
(`require_tenant`; another tenant's revision reads as absent), as for the audit routes.
The operations below are transport-free: HTTP and gRPC map their errors to statuses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Protocol

from fastapi import Depends, HTTPException, Request, status
from starlette.concurrency import run_in_threadpool

from tessera.events.projections import HeadRow, RevisionRow, UserRow
from tessera.events.webhooks import WebhookStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.schemas.training_api import Requested, RevisionList, RevisionSummary
from tessera.services.audit.access import Caller, require_tenant, resolve_caller
from tessera.services.auth import KeyAuthenticator, Unauthenticated, key_from_headers
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.peft_format import ImportTarget
from tessera.workers.revision_events import revision_id_for
from tessera.workers.training_request import TrainingRequest


class RevisionReader(Protocol):
    """The read side of the event store these routes use (both stores provide it)."""

    def get_user(self, tenant_id: str, user_id: str) -> UserRow | None: ...

    def get_head(self, tenant_id: str, user_id: str) -> HeadRow | None: ...

    def get_revision(self, revision_id: str) -> RevisionRow | None: ...

    def list_revisions(self, tenant_id: str, user_id: str) -> list[RevisionRow]: ...


@dataclass
class TrainingApi:
    store: RevisionReader
    adapters: AdapterStore
    hooks: WebhookStore
    publish: Callable[[TrainingRequest], None]
    resolve_target: Callable[[], ImportTarget]
    close: Callable[[], None] = lambda: None
    _target: ImportTarget | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def import_target(self) -> ImportTarget:
        """Resolved once: reading the base model's headers is cheap, finding (or first
        converting) the base model may not be."""
        with self._lock:
            if self._target is None:
                self._target = self.resolve_target()
            return self._target


def _api(request: Request) -> TrainingApi:
    api = getattr(request.app.state, "training", None)
    if not isinstance(api, TrainingApi):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the training API is not running in this server; start `tessera serve` with the "
            "training component",
        )
    return api


async def caller_for(request: Request) -> Caller:
    auth = getattr(request.app.state, "auth", None)
    if not isinstance(auth, KeyAuthenticator):
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                            "authentication is not configured on this server")
    try:
        return await run_in_threadpool(resolve_caller, auth, key_from_headers(request.headers))
    except Unauthenticated as exc:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, str(exc),
                            headers={"WWW-Authenticate": "Bearer"}) from None


Api = Annotated[TrainingApi, Depends(_api)]
ApiCaller = Annotated[Caller, Depends(caller_for)]


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class TrainingNotFound(LookupError):
    """No such user events or revision (or not the caller's tenant's)."""


class TrainingUnprocessable(ValueError):
    """The request cannot be served as asked; the message says what to do."""


def summary(row: RevisionRow, served_id: str | None) -> RevisionSummary:
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


def last_position(api: TrainingApi, tenant_id: str, user_id: str) -> int:
    """The user's latest interaction position: what a new revision is trained up to."""
    if user_id == PRIOR_USER_ID:
        raise TrainingUnprocessable("the tenant prior is trained nightly (or `tessera train "
                                    "~prior`); these routes are for a user's own revisions")
    row = api.store.get_user(tenant_id, user_id)
    if row is None or row.last_position is None:
        raise TrainingNotFound(f"no interaction events for {tenant_id}/{user_id} (since their "
                               "last forget): send some to /v1/events first")
    return int(row.last_position)


def follow_path(tenant_id: str, user_id: str) -> str:
    return f"/v1/admin/users/{tenant_id}/{user_id}/revisions"


def request_revision(api: TrainingApi, caller: Caller, tenant_id: str,
                     user_id: str) -> Requested:
    """Publish a training request for the user's events so far (Forbidden for another
    tenant's key)."""
    require_tenant(caller, tenant_id)
    position = last_position(api, tenant_id, user_id)
    api.publish(TrainingRequest(tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                                trigger="manual"))
    return Requested(tenant_id=tenant_id, user_id=user_id, up_to_position=position,
                     revision_id=revision_id_for(tenant_id, user_id, position),
                     follow=follow_path(tenant_id, user_id))


def revision_list(api: TrainingApi, caller: Caller, tenant_id: str,
                  user_id: str) -> RevisionList:
    require_tenant(caller, tenant_id)
    head = api.store.get_head(tenant_id, user_id)
    served = head.revision_id if head is not None else None
    rows = api.store.list_revisions(tenant_id, user_id)
    return RevisionList(tenant_id=tenant_id, user_id=user_id, served_revision_id=served,
                        revisions=[summary(r, served) for r in rows])


def visible_revision(api: TrainingApi, caller: Caller, revision_id: str) -> RevisionRow:
    """The revision, TrainingNotFound also when it is another tenant's (ids are not
    probeable)."""
    row = (api.store.get_revision(revision_id)
           if len(revision_id) <= 128 and "\x00" not in revision_id else None)
    if row is None or (caller.tenant_id is not None and caller.tenant_id != row.tenant_id):
        raise TrainingNotFound(f"no revision {revision_id!r}")
    return row


def one_revision(api: TrainingApi, caller: Caller, tenant_id: str, user_id: str,
                 revision_id: str) -> RevisionSummary:
    require_tenant(caller, tenant_id)
    row = visible_revision(api, caller, revision_id)
    if (row.tenant_id, row.user_id) != (tenant_id, user_id):
        raise TrainingNotFound(f"no revision {revision_id!r} of {tenant_id}/{user_id}")
    head = api.store.get_head(tenant_id, user_id)
    return summary(row, head.revision_id if head is not None else None)
