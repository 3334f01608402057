"""OpenAI-compatible `POST /v1/chat/completions` and `POST /v1/completions`.

Any OpenAI client works against Tessera: point `base_url` at `/v1` and use a tenant API
key as the key. The request's `user` picks whose personal model answers, within the
key's tenant (no `user`: the tenant prior, else the base model). `model` is echoed back
and otherwise ignored: there is one base model per server. Each response also carries
`tessera_revision` (which revision answered) and the header `X-Tessera-Revision`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from tessera.schemas.events import PRIOR_USER_ID
from tessera.services.auth import TenantCaller
from tessera.services.inference.http_support import Engine, headers_for, status_for, submit
from tessera.services.inference.requests import (
    EngineError,
    GenerateRequest,
    GenerateResult,
    Generation,
    TokenEvent,
)
from tessera.services.inference.sampling import MAX_STOP_CHARS, MAX_STOP_STRINGS, SamplingParams

router = APIRouter(tags=["openai-compatible"])

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
StopList = Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)]


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str


class _Common(BaseModel):
    model: str = "tessera"
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stop: StopString | StopList | None = Field(
        None, description=f"At most {MAX_STOP_STRINGS} strings of {MAX_STOP_CHARS} characters."
    )
    stream: bool = False
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    user: str | None = Field(None, max_length=128, description="Whose personal model answers.")


class ChatBody(_Common):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_Common):
    prompt: str | list[str]


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "An OpenAI-shaped completion, or an SSE stream of chunks ending "
        "with `data: [DONE]` when `stream` is true."
    },
    400: {"description": "Invalid request (OpenAI error object)."},
    401: {"description": "No API key, or an unknown or revoked one."},
    429: {"description": "The tenant is over its quota: retry after `Retry-After` seconds."},
    503: {"description": "The queue is full: retry after `Retry-After` seconds."},
    504: {"description": "The request ran past its timeout."},
}


def _error(
    status: int, message: str, kind: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def _request(body: _Common, tenant_id: str, prompt: str, max_tokens: int) -> GenerateRequest:
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        seed=body.seed,
        stop=tuple(stop),
    )
    return GenerateRequest(tenant_id, body.user or PRIOR_USER_ID, prompt, params)


def _revision(gen: Generation) -> dict[str, Any]:
    r = gen.revision
    return {"revision_id": r.revision_id, "adapter_digest": r.adapter_digest, "source": r.source}


def _usage(r: GenerateResult) -> dict[str, int]:
    return {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
    }


async def _run(
    engine: Engine, body: _Common, request: GenerateRequest, kind: str
) -> JSONResponse | StreamingResponse:
    try:
        gen = await submit(engine, request)
        if body.stream:
            return StreamingResponse(
                _chunks(gen, body.model, kind),
                media_type="text/event-stream",
                headers={"X-Tessera-Revision": gen.revision.name},
            )
        result = await gen.aresult()
    except EngineError as exc:
        return _error(status_for(exc), str(exc), type(exc).__name__, headers_for(exc))
    choice: dict[str, Any] = {"index": 0, "finish_reason": result.finish_reason, "logprobs": None}
    if kind == "chat":
        choice["message"] = {"role": "assistant", "content": result.text}
    else:
        choice["text"] = result.text
    out = {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{gen.request_id}",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": gen.revision.name,
        "choices": [choice],
        "usage": _usage(result),
        "tessera_revision": _revision(gen),
    }
    return JSONResponse(out, headers={"X-Tessera-Revision": gen.revision.name})


async def _chunks(gen: Generation, model: str, kind: str) -> AsyncIterator[str]:
    created = int(time.time())
    base = {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{gen.request_id}",
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": created,
        "model": model,
        "system_fingerprint": gen.revision.name,
        "tessera_revision": _revision(gen),
    }

    def chunk(text: str | None, finish: str | None, first: bool = False) -> str:
        if kind == "chat":
            delta: dict[str, Any] = {"role": "assistant"} if first else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"

    try:
        if kind == "chat":
            yield chunk("", None, first=True)
        async for event in gen.aevents():
            if isinstance(event, TokenEvent):
                if event.text:
                    yield chunk(event.text, None)
            else:
                yield chunk(None if kind == "chat" else "", event.finish_reason)
        yield "data: [DONE]\n\n"
    except EngineError as exc:
        err = {"error": {"message": str(exc), "type": type(exc).__name__, "code": status_for(exc)}}
        yield f"data: {json.dumps(err)}\n\n"


@router.post(
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completion",
    response_model=None,
    responses=_RESPONSES,
)
async def chat_completions(
    body: ChatBody, tenant_id: TenantCaller, engine: Engine
) -> JSONResponse | StreamingResponse:
    """Answer `messages` with the personal model of `user` (chat template applied)."""
    prompt = engine.codec.chat_prompt([m.model_dump() for m in body.messages])
    max_tokens = body.max_completion_tokens or body.max_tokens or 64
    try:
        request = _request(body, tenant_id, prompt, max_tokens)
    except ValueError as exc:
        return _error(400, str(exc), "invalid_request_error")
    return await _run(engine, body, request, "chat")


@router.post(
    "/v1/completions",
    summary="OpenAI-compatible text completion",
    response_model=None,
    responses=_RESPONSES,
)
async def completions(
    body: CompletionBody, tenant_id: TenantCaller, engine: Engine
) -> JSONResponse | StreamingResponse:
    """Continue `prompt` with the personal model of `user`."""
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        return _error(400, "send exactly one prompt per request", "invalid_request_error")
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    try:
        request = _request(body, tenant_id, prompt, body.max_tokens or 16)
    except ValueError as exc:
        return _error(400, str(exc), "invalid_request_error")
    return await _run(engine, body, request, "text")
