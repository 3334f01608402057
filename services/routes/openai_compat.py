"""OpenAI-compatible `POST /v1/chat/completions` and `POST /v1/completions`.

Any OpenAI client works against Tessera: point `base_url` at `/v1` and use a tenant API
key as the key. `model` picks whose model answers, within the key's tenant
(`user:<id>`, `user:<id>@<revision>`, `prior`, the base's id; see
services/inference/openai_models.py); with the default `tessera` or the base's id the
request's `user` picks it, as before. Each response also carries `tessera_revision`
(which revision answered) and the header `X-Tessera-Revision`. Errors come in OpenAI's
envelope (services/openai_errors.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from tessera.services.auth import TenantCaller
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.http_support import Engine, headers_for, status_for, submit
from tessera.services.inference.openai_models import (
    DEFAULT_MODEL,
    Target,
    UnknownModelError,
    resolve_model,
)
from tessera.services.inference.requests import (
    EngineError,
    GenerateRequest,
    GenerateResult,
    Generation,
    TokenEvent,
)
from tessera.services.inference.sampling import (
    MAX_REPETITION_PENALTY,
    MAX_STOP_CHARS,
    MAX_STOP_STRINGS,
    MIN_REPETITION_PENALTY,
    SamplingParams,
)
from tessera.services.openai_errors import error_body, error_response

router = APIRouter(tags=["openai-compatible"])

StopString = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
StopList = Annotated[list[StopString], Field(max_length=MAX_STOP_STRINGS)]


# Choices per request: each is one more engine request; the cap keeps one call's cost
# within what a client could send as separate requests under its quota.
MAX_N = 8


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    role: Literal["system", "user", "assistant", "developer"]
    content: str | list[TextPart] | None = Field(
        description="A string, or content parts of type `text` (joined by newlines)."
    )

    def text(self) -> dict[str, str]:
        content = self.content or ""
        if isinstance(content, list):
            content = "\n".join(part.text for part in content)
        return {"role": self.role, "content": content}


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model: str = DEFAULT_MODEL
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = Field(None, ge=0)
    stop: StopString | StopList | None = Field(
        None, description=f"At most {MAX_STOP_STRINGS} strings of {MAX_STOP_CHARS} characters."
    )
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, description=f"Choices (at most {MAX_N}; 1 when streaming).")
    user: str | None = Field(None, max_length=128, description="Whose personal model answers.")
    # Not OpenAI's: an extension field, named and meant as vLLM accepts it.
    repetition_penalty: float | None = Field(
        None, ge=MIN_REPETITION_PENALTY, le=MAX_REPETITION_PENALTY,
        description="Extension (as vLLM's): Hugging Face's repetition penalty, 1 = off; "
        "omitted: the server's default.")


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
    404: {"description": "`model` names no model of this tenant (`model_not_found`)."},
    429: {"description": "The tenant is over its quota: retry after `Retry-After` seconds."},
    503: {"description": "The queue is full: retry after `Retry-After` seconds."},
    504: {"description": "The request ran past its timeout."},
}


def _requests(
    body: _Common, tenant_id: str, target: Target, prompt: str, max_tokens: int
) -> list[GenerateRequest]:
    """One engine request per choice; with a seed, choice i samples with seed + i so the
    choices differ yet the call stays reproducible."""
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    out = []
    for i in range(body.n):
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_p=body.top_p,
            seed=None if body.seed is None else body.seed + i,
            stop=tuple(stop),
            repetition_penalty=body.repetition_penalty,
        )
        out.append(
            GenerateRequest(tenant_id, target.user_id, prompt, params, revision=target.revision)
        )
    return out


async def _prepare(
    engine: InferenceEngine, body: _Common, tenant_id: str, prompt: str, max_tokens: int
) -> list[GenerateRequest] | JSONResponse:
    """The engine requests for `body`, or the OpenAI error that refuses it."""
    if body.n > MAX_N:
        return error_response(400, f"n is at most {MAX_N}", param="n")
    if body.stream and body.n > 1:
        return error_response(
            400, "n > 1 cannot be streamed; send n = 1 or stream = false", param="n"
        )
    resolver, base_id = engine.resolver, engine.config.model_id
    try:
        target = await asyncio.to_thread(
            resolve_model, resolver, base_id, tenant_id, body.model, body.user
        )
    except UnknownModelError as exc:
        return error_response(404, str(exc), param="model", code="model_not_found")
    try:
        return _requests(body, tenant_id, target, prompt, max_tokens)
    except ValueError as exc:
        return error_response(400, str(exc))


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
    engine: Engine, body: _Common, requests: list[GenerateRequest], kind: str
) -> JSONResponse | StreamingResponse:
    gens: list[Generation] = []
    try:
        for request in requests:
            gens.append(await submit(engine, request))
        gen = gens[0]
        if body.stream:
            with_usage = body.stream_options is not None and body.stream_options.include_usage
            return StreamingResponse(
                _chunks(gen, body.model, kind, with_usage),
                media_type="text/event-stream",
                headers={"X-Tessera-Revision": gen.revision.name},
            )
        results = await asyncio.gather(*(g.aresult() for g in gens))
    except EngineError as exc:
        for started in gens:  # one choice refused (quota, queue): the others stop too
            started.cancel()
        return error_response(status_for(exc), str(exc), headers=headers_for(exc))
    choices = []
    for index, result in enumerate(results):
        choice: dict[str, Any] = {
            "index": index,
            "finish_reason": result.finish_reason,
            "logprobs": None,
        }
        if kind == "chat":
            choice["message"] = {"role": "assistant", "content": result.text}
        else:
            choice["text"] = result.text
        choices.append(choice)
    completion = sum(r.completion_tokens for r in results)
    usage = {**_usage(results[0]), "completion_tokens": completion}
    usage["total_tokens"] = usage["prompt_tokens"] + completion
    out = {
        "id": f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{gen.request_id}",
        "object": "chat.completion" if kind == "chat" else "text_completion",
        "created": int(time.time()),
        "model": body.model,
        "system_fingerprint": gen.revision.name,
        "choices": choices,
        "usage": usage,
        "tessera_revision": _revision(gen),
    }
    return JSONResponse(out, headers={"X-Tessera-Revision": gen.revision.name})


async def _chunks(
    gen: Generation, model: str, kind: str, include_usage: bool
) -> AsyncIterator[str]:
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
        extra = {"usage": None} if include_usage else {}
        return f"data: {json.dumps({**base, 'choices': [choice], **extra})}\n\n"

    try:
        if kind == "chat":
            yield chunk("", None, first=True)
        async for event in gen.aevents():
            if isinstance(event, TokenEvent):
                if event.text:
                    yield chunk(event.text, None)
            else:
                yield chunk(None if kind == "chat" else "", event.finish_reason)
                if include_usage:  # OpenAI's last chunk: no choices, the totals
                    final: dict[str, Any] = {**base, "choices": [], "usage": _usage(event)}
                    yield f"data: {json.dumps(final)}\n\n"
        yield "data: [DONE]\n\n"
    except EngineError as exc:
        yield f"data: {json.dumps(error_body(status_for(exc), str(exc)))}\n\n"


@router.post(
    "/v1/chat/completions",
    summary="OpenAI-compatible chat completion",
    response_model=None,
    responses=_RESPONSES,
)
async def chat_completions(
    body: ChatBody, tenant_id: TenantCaller, engine: Engine
) -> JSONResponse | StreamingResponse:
    """Answer `messages` with the model `model` selects (chat template applied)."""
    prompt = engine.codec.chat_prompt([m.text() for m in body.messages])
    max_tokens = body.max_completion_tokens or body.max_tokens or 64
    requests = await _prepare(engine, body, tenant_id, prompt, max_tokens)
    if isinstance(requests, JSONResponse):
        return requests
    return await _run(engine, body, requests, "chat")


@router.post(
    "/v1/completions",
    summary="OpenAI-compatible text completion",
    response_model=None,
    responses=_RESPONSES,
)
async def completions(
    body: CompletionBody, tenant_id: TenantCaller, engine: Engine
) -> JSONResponse | StreamingResponse:
    """Continue `prompt` with the model `model` selects."""
    if isinstance(body.prompt, list) and len(body.prompt) != 1:
        return error_response(400, "send exactly one prompt per request", param="prompt")
    prompt = body.prompt if isinstance(body.prompt, str) else body.prompt[0]
    requests = await _prepare(engine, body, tenant_id, prompt, body.max_tokens or 16)
    if isinstance(requests, JSONResponse):
        return requests
    return await _run(engine, body, requests, "text")
