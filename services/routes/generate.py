"""`POST /v1/generate`: text from the caller's user's served revision, whole or as SSE.

The user's personal head answers, else the tenant prior, else the base model; the
response names which (`revision`). With `"stream": true` the answer is a
`text/event-stream` of `data: {"text": ...}` events ending with one that has
`"done": true` and the totals; an error mid-stream arrives as `event: error`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from tessera.services.auth import TenantCaller
from tessera.services.inference.http_support import Engine, headers_for, status_for, submit
from tessera.services.inference.requests import EngineError, GenerateRequest, GenerateResult
from tessera.services.inference.revisions import Served
from tessera.services.inference.sampling import (
    GREEDY_BELOW,
    MAX_REPETITION_PENALTY,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MAX_TEMPERATURE,
    MIN_REPETITION_PENALTY,
    SamplingParams,
)

router = APIRouter(tags=["inference"])


class GenerateBody(BaseModel):
    user_id: str = Field(min_length=1, max_length=128, description="Whose model answers.")
    prompt: str = Field(min_length=1, description="The text to continue.")
    max_tokens: int = Field(64, ge=1, description="Most new tokens (the server caps it).")
    temperature: float = Field(
        0.0, ge=0.0, le=MAX_TEMPERATURE, description=f"Below {GREEDY_BELOW:g}: greedy."
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0, description="Same seed, prompt, revision -> same text.")
    stop: list[Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]] = Field(
        default_factory=list, max_length=MAX_STOP_STRINGS
    )
    repetition_penalty: float | None = Field(
        None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY,
        description="Hugging Face's repetition penalty: each token already in the prompt or "
        "the reply has its logit divided (if positive) or multiplied by it; 1 = off; "
        "omitted: the server's default (TESSERA_SERVE_REPETITION_PENALTY).")
    stream: bool = Field(False, description="Answer as server-sent events.")
    # Below a tenth of a second a request cannot even be scheduled: refuse it (422)
    # rather than answer a certain 504.
    timeout_s: float | None = Field(
        None, ge=0.1, description="Seconds the request may take (at least 0.1; default and "
        "ceiling: the server's).")


class RevisionOut(BaseModel):
    revision_id: str | None
    adapter_digest: str | None
    source: Literal["personal", "prior", "base"]

    @classmethod
    def of(cls, served: Served) -> RevisionOut:
        return cls(
            revision_id=served.revision_id,
            adapter_digest=served.adapter_digest,
            source=served.source,
        )


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int


class GenerateOut(BaseModel):
    request_id: str
    text: str
    finish_reason: Literal["stop", "length", "cancelled"]
    revision: RevisionOut
    usage: Usage

    @classmethod
    def of(cls, r: GenerateResult) -> GenerateOut:
        return cls(
            request_id=r.request_id,
            text=r.text,
            finish_reason=r.finish_reason,
            revision=RevisionOut.of(r.revision),
            usage=Usage(prompt_tokens=r.prompt_tokens, completion_tokens=r.completion_tokens),
        )


def to_request(body: GenerateBody, tenant_id: str) -> GenerateRequest:
    try:
        params = SamplingParams(
            max_tokens=body.max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=body.seed,
            stop=tuple(body.stop),
            repetition_penalty=body.repetition_penalty,
        )
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return GenerateRequest(tenant_id, body.user_id, body.prompt, params, body.timeout_s)


@router.post(
    "/v1/generate",
    response_model=GenerateOut,
    summary="Generate with the user's personal model",
    responses={
        400: {"description": "The prompt or limits cannot be served."},
        401: {"description": "No API key, or an unknown or revoked one."},
        429: {"description": "The tenant is over its quota: retry after `Retry-After`."},
        503: {"description": "The queue is full (retry after `Retry-After`) or no engine."},
        504: {"description": "The request ran past its timeout."},
    },
)
async def generate(
    body: GenerateBody, tenant_id: TenantCaller, engine: Engine, response: Response
) -> object:
    """Generate a continuation of `prompt` with `user_id`'s served revision."""
    try:
        gen = await submit(engine, to_request(body, tenant_id))
        if not body.stream:
            # as on streams and the OpenAI routes; the access log reads it (revision_id)
            response.headers["X-Tessera-Revision"] = gen.revision.name
            return GenerateOut.of(await gen.aresult())
    except EngineError as exc:
        raise HTTPException(status_for(exc), str(exc), headers=headers_for(exc)) from None
    return StreamingResponse(
        _sse(gen.aevents(), gen.request_id, gen.revision),
        media_type="text/event-stream",
        headers={"X-Tessera-Revision": gen.revision.name},
    )


async def _sse(
    events: AsyncIterator[object], request_id: str, served: Served
) -> AsyncIterator[str]:
    revision = RevisionOut.of(served).model_dump()
    try:
        async for event in events:
            if isinstance(event, GenerateResult):
                final = GenerateOut.of(event).model_dump()
                yield f"data: {json.dumps({**final, 'done': True})}\n\n"
            else:
                text = getattr(event, "text", "")
                if text:
                    payload = {"request_id": request_id, "text": text, "revision": revision}
                    yield f"data: {json.dumps(payload)}\n\n"
    except EngineError as exc:
        err = {"request_id": request_id, "status": status_for(exc), "detail": str(exc)}
        yield f"event: error\ndata: {json.dumps(err)}\n\n"
