"""OpenAI-compatible `GET /v1/models` and `GET /v1/models/{model}`.

Lists the base model and the tenant's prior and names the scheme for personal models
(`user:<id>`, `user:<id>@<revision>`; services/inference/openai_models.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter

from tessera.services.auth import TenantCaller
from tessera.services.inference.http_support import Engine
from tessera.services.inference.openai_models import (
    UnknownModelError,
    describe,
    list_models,
    resolve_model,
)
from tessera.services.openai_errors import error_response

router = APIRouter(tags=["openai-compatible"])


@router.get("/v1/models", summary="OpenAI-compatible model list")
async def models(tenant_id: TenantCaller, engine: Engine) -> dict[str, Any]:
    """The base, the tenant's prior (if promoted) and `tessera_naming` for personal ones."""
    base_id = engine.config.model_id
    return await asyncio.to_thread(list_models, engine.resolver, base_id, tenant_id)


@router.get(
    "/v1/models/{model:path}", summary="OpenAI-compatible model lookup", response_model=None
)
async def model(model: str, tenant_id: TenantCaller, engine: Engine) -> Any:
    """One model by name; 404 `model_not_found` for names that select nothing."""
    resolver, base_id = engine.resolver, engine.config.model_id
    try:
        target = await asyncio.to_thread(resolve_model, resolver, base_id, tenant_id, model, None)
    except UnknownModelError as exc:
        return error_response(404, str(exc), param="model", code="model_not_found")
    return describe(target, model)
