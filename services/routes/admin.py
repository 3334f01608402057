"""Admin HTTP API: audit queries, rollback, forget, and the admin page.

    GET  /v1/admin/users/{tenant}/{user}/lineage   revision tree and history
    GET  /v1/admin/revisions/{revision_id}         full provenance
    GET  /v1/admin/requests/{request_id}           which revision answered
    POST /v1/admin/users/{tenant}/{user}/rollback  {"reason": ..., "to_revision_id": ...}
    POST /v1/admin/users/{tenant}/{user}/forget    {"reason": ...}
    GET  /admin/users/{tenant}/{user}              the admin page (HTML)

Reads accept the admin key or the key of the user's own tenant; rollback and forget
need the admin key (services/audit/access.py). The page itself holds no data: its
script reads the key from the URL fragment (`#key=...`, never sent to the server) and
calls the JSON endpoints above with it.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from tessera.schemas.api import MAX_REASON_CHARS
from tessera.services.audit.access import Caller, require_admin, require_tenant, resolve_caller
from tessera.services.audit.backend import AdminBackend
from tessera.services.audit.queries import (
    AuditNotFound,
    RequestAudit,
    RevisionProvenance,
    UserLineage,
    request_audit,
    revision_provenance,
    user_lineage,
)
from tessera.services.auth import Forbidden, KeyAuthenticator, Unauthenticated, key_from_headers
from tessera.services.corrective import CorrectiveError, NothingToForget

router = APIRouter(tags=["admin"])


class RollbackBody(BaseModel):
    reason: str = Field(min_length=1, max_length=MAX_REASON_CHARS, description="Kept in the log.")
    to_revision_id: str | None = Field(
        None, description="Revision to serve; omitted: the head's parent (or prior/base)."
    )


class ForgetBody(BaseModel):
    reason: str = Field(
        min_length=1, max_length=MAX_REASON_CHARS, description="Kept in the tombstone."
    )


def _backend(request: Request) -> AdminBackend:
    backend = getattr(request.app.state, "admin", None)
    if not isinstance(backend, AdminBackend):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the admin API is not running in this server; start `tessera serve` with the "
            "audit component",
        )
    return backend


async def _caller(request: Request) -> Caller:
    auth = getattr(request.app.state, "auth", None)
    if not isinstance(auth, KeyAuthenticator):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "authentication is not configured on this server"
        )
    try:
        return await run_in_threadpool(resolve_caller, auth, key_from_headers(request.headers))
    except Unauthenticated as exc:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, str(exc), headers={"WWW-Authenticate": "Bearer"}
        ) from None


Backend = Annotated[AdminBackend, Depends(_backend)]
AuditCaller = Annotated[Caller, Depends(_caller)]


def _forbidden(exc: Forbidden) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, str(exc))


@router.get("/v1/admin/users/{tenant_id}/{user_id}/lineage", response_model=UserLineage)
def get_lineage(tenant_id: str, user_id: str, backend: Backend, caller: AuditCaller) -> Any:
    """The user's revisions as a tree, what they are served now, and the history."""
    try:
        require_tenant(caller, tenant_id)
        return user_lineage(backend.store, tenant_id, user_id, scope=caller.scope)
    except Forbidden as exc:
        raise _forbidden(exc) from None
    except AuditNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/v1/admin/revisions/{revision_id}", response_model=RevisionProvenance)
def get_revision(revision_id: str, backend: Backend, caller: AuditCaller) -> Any:
    """A revision's full provenance and every log event that named it."""
    try:
        return revision_provenance(backend.store, revision_id, scope=caller.scope)
    except AuditNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.get("/v1/admin/requests/{request_id}", response_model=RequestAudit)
def get_request(request_id: str, backend: Backend, caller: AuditCaller) -> Any:
    """Which revision answered an inference request."""
    try:
        return request_audit(backend.store, request_id, scope=caller.scope)
    except AuditNotFound as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None


@router.post("/v1/admin/users/{tenant_id}/{user_id}/rollback")
def post_rollback(
    tenant_id: str, user_id: str, body: RollbackBody, backend: Backend, caller: AuditCaller
) -> dict[str, Any]:
    """Switch the user's served revision back (or forward); 409 says why when refused."""
    try:
        require_admin(caller, "rollback")
    except Forbidden as exc:
        raise _forbidden(exc) from None
    try:
        result = backend.actions.rollback(
            tenant_id,
            user_id,
            to_revision_id=body.to_revision_id,
            reason=body.reason,
            actor=caller.actor,
        )
    except CorrectiveError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return asdict(result)


@router.post("/v1/admin/users/{tenant_id}/{user_id}/forget")
def post_forget(
    tenant_id: str, user_id: str, body: ForgetBody, backend: Backend, caller: AuditCaller
) -> dict[str, Any]:
    """Erase the user's content and adapters everywhere; the log keeps a tombstone."""
    try:
        require_admin(caller, "forget")
    except Forbidden as exc:
        raise _forbidden(exc) from None
    try:
        result = backend.actions.forget(
            tenant_id, user_id, actor=caller.actor, reason=body.reason
        )
    except NothingToForget as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except CorrectiveError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    return asdict(result)


@cache
def _page() -> str:
    return (resources.files("tessera.services") / "static" / "admin.html").read_text("utf-8")


@router.get("/admin/users/{tenant_id}/{user_id}", response_class=HTMLResponse)
def admin_page(tenant_id: str, user_id: str) -> HTMLResponse:
    """The admin page for one user (lineage graph, metric plot, provenance on click).
    Holds no data itself: its script fetches the JSON endpoints with the key given in
    the URL fragment, e.g. `/admin/users/acme/alice#key=<admin or tenant key>`."""
    return HTMLResponse(_page(), headers={"Cache-Control": "no-store"})
