"""A tenant's webhook: where Tessera tells its app that a user's model changed.

    PUT    /v1/admin/tenants/{tenant}/webhook             {"url": ..., "secret": ...}
    GET    /v1/admin/tenants/{tenant}/webhook             the URL (never the secret)
    DELETE /v1/admin/tenants/{tenant}/webhook
    GET    /v1/admin/tenants/{tenant}/webhook/deliveries  the delivery log, newest first

The admin key for any tenant, a tenant key for its own. Signing, retries and the body
are described in services/webhooks/ and the README ("Webhooks").
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Response, status
from pydantic import AnyHttpUrl, BaseModel, Field

from tessera.services.audit.access import require_tenant
from tessera.services.auth import Forbidden
from tessera.services.training_api import Api, ApiCaller, iso

router = APIRouter(tags=["webhooks"])


class WebhookBody(BaseModel):
    url: AnyHttpUrl = Field(description="http(s) URL that receives the POSTs.")
    # Printable characters only: the secret is stored as text (PostgreSQL refuses NUL)
    # and is typed into the receiving app's configuration.
    secret: str = Field(min_length=16, max_length=256, pattern=r"^[\x20-\x7e]+$",
                        description="HMAC-SHA256 key (printable ASCII); keep it in the "
                        "receiving app too.")


class WebhookInfo(BaseModel):
    tenant_id: str
    url: str
    updated_at: str


class Delivery(BaseModel):
    event_id: uuid.UUID
    event_type: str
    position: int
    url: str
    attempt: int
    ok: bool
    status_code: int | None
    error: str | None
    attempted_at: str | None


def _allowed(caller: ApiCaller, tenant_id: str) -> None:
    try:
        require_tenant(caller, tenant_id)
    except Forbidden as exc:
        raise HTTPException(status.HTTP_403_FORBIDDEN, str(exc)) from None


@router.put("/v1/admin/tenants/{tenant_id}/webhook", response_model=WebhookInfo)
def put_webhook(tenant_id: str, body: WebhookBody, api: Api, caller: ApiCaller) -> WebhookInfo:
    """Set (or replace) the tenant's webhook."""
    _allowed(caller, tenant_id)
    hook = api.hooks.set_webhook(tenant_id, str(body.url), body.secret)
    return WebhookInfo(tenant_id=tenant_id, url=hook.url, updated_at=hook.updated_at.isoformat())


@router.get("/v1/admin/tenants/{tenant_id}/webhook", response_model=WebhookInfo)
def get_webhook(tenant_id: str, api: Api, caller: ApiCaller) -> WebhookInfo:
    _allowed(caller, tenant_id)
    hook = api.hooks.get_webhook(tenant_id)
    if hook is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant_id!r} has no webhook")
    return WebhookInfo(tenant_id=tenant_id, url=hook.url, updated_at=hook.updated_at.isoformat())


@router.delete("/v1/admin/tenants/{tenant_id}/webhook", status_code=204,
               response_class=Response)
def delete_webhook(tenant_id: str, api: Api, caller: ApiCaller) -> Response:
    _allowed(caller, tenant_id)
    if not api.hooks.delete_webhook(tenant_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"tenant {tenant_id!r} has no webhook")
    return Response(status_code=204)


@router.get("/v1/admin/tenants/{tenant_id}/webhook/deliveries", response_model=list[Delivery])
def list_deliveries(
    tenant_id: str, api: Api, caller: ApiCaller,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    event_id: uuid.UUID | None = None,
) -> list[Delivery]:
    """Every delivery try (newest first): status or error, attempt number."""
    _allowed(caller, tenant_id)
    return [
        Delivery(event_id=a.event_id, event_type=a.event_type, position=a.position, url=a.url,
                 attempt=a.attempt, ok=a.ok, status_code=a.status_code, error=a.error,
                 attempted_at=iso(a.attempted_at))
        for a in api.hooks.deliveries(tenant_id, event_id=event_id, limit=limit)
    ]
