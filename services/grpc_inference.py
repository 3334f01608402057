"""gRPC `tessera.v1.Inference`: Generate and GenerateStream over the same engine as HTTP.

Status codes: INVALID_ARGUMENT (bad request), UNAUTHENTICATED, RESOURCE_EXHAUSTED (queue
full, or the tenant over its quota: retry with backoff), DEADLINE_EXCEEDED (ran past its
timeout), UNAVAILABLE (engine not running). A client that cancels a stream cancels its
sequence in the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, NoReturn

import grpc

from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.auth import KeyAuthenticator, Unauthenticated, key_from_headers
from tessera.services.grpc_server import GrpcService
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.requests import (
    EngineError,
    EngineStoppedError,
    GenerateRequest,
    GenerateResult,
    Generation,
    InvalidRequestError,
    QueueFullError,
    QuotaExceededError,
    RequestTimeoutError,
)
from tessera.services.inference.revisions import Served
from tessera.services.inference.sampling import SamplingParams

SERVICE_NAME: Final = "tessera.v1.Inference"
DEFAULT_MAX_TOKENS: Final = 64
MAX_USER_ID_CHARS: Final = 128


def code_for(exc: EngineError) -> grpc.StatusCode:
    if isinstance(exc, QueueFullError | QuotaExceededError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, RequestTimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    if isinstance(exc, InvalidRequestError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, EngineStoppedError):
        return grpc.StatusCode.UNAVAILABLE
    return grpc.StatusCode.INTERNAL


def _revision(served: Served) -> tessera_pb2.ServedRevision:
    return tessera_pb2.ServedRevision(
        revision_id=served.revision_id or "",
        adapter_digest=served.adapter_digest or "",
        source=served.source,
    )


class InferenceServicer(tessera_pb2_grpc.InferenceServicer):
    def __init__(self, *, engine: InferenceEngine, auth: KeyAuthenticator) -> None:
        self._engine = engine
        self._auth = auth

    def _start(
        self, request: tessera_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Generation:
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        try:
            tenant_id = self._auth.tenant_for_key(key_from_headers(metadata))
        except Unauthenticated as exc:
            _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
        if not 0 < len(request.user_id) <= MAX_USER_ID_CHARS:  # as HTTP's GenerateBody
            _abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"user_id is required, at most {MAX_USER_ID_CHARS} characters",
            )
        try:
            params = SamplingParams(
                max_tokens=request.max_tokens or DEFAULT_MAX_TOKENS,
                temperature=request.temperature,
                top_p=request.top_p if request.HasField("top_p") else 1.0,
                seed=request.seed if request.HasField("seed") else None,
                stop=tuple(request.stop),
                repetition_penalty=(
                    request.repetition_penalty if request.HasField("repetition_penalty") else None
                ),
            )
            # The client's deadline bounds the request too: past it nobody reads the answer.
            timeout_s: float | None = request.timeout_s or None
            remaining = context.time_remaining()
            if remaining is not None and (timeout_s is None or remaining < timeout_s):
                timeout_s = max(remaining, 1e-3)
            gen = self._engine.submit(
                GenerateRequest(tenant_id, request.user_id, request.prompt, params, timeout_s)
            )
        except ValueError as exc:  # SamplingParams and InvalidRequestError
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except EngineError as exc:
            _abort(context, code_for(exc), str(exc))
        # The client went away (or its deadline passed): free the batch row and this thread.
        if not context.add_callback(gen.cancel):
            gen.cancel()  # the call had already ended
        return gen

    def Generate(
        self, request: tessera_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> tessera_pb2.GenerateResponse:
        gen = self._start(request, context)
        try:
            r = gen.result()
        except EngineError as exc:
            _abort(context, code_for(exc), str(exc))
        return tessera_pb2.GenerateResponse(
            request_id=r.request_id,
            text=r.text,
            finish_reason=r.finish_reason,
            revision=_revision(r.revision),
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
        )

    def GenerateStream(
        self, request: tessera_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[tessera_pb2.GenerateChunk]:
        gen = self._start(request, context)
        revision = _revision(gen.revision)
        try:
            for event in gen.events():
                if isinstance(event, GenerateResult):
                    yield tessera_pb2.GenerateChunk(
                        request_id=gen.request_id,
                        revision=revision,
                        done=True,
                        finish_reason=event.finish_reason,
                        prompt_tokens=event.prompt_tokens,
                        completion_tokens=event.completion_tokens,
                    )
                elif event.text:
                    yield tessera_pb2.GenerateChunk(
                        request_id=gen.request_id, text=event.text, revision=revision
                    )
        except EngineError as exc:
            _abort(context, code_for(exc), str(exc))


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort raises")  # for type checkers: abort never returns


def inference_grpc_service(*, engine: InferenceEngine, auth: KeyAuthenticator) -> GrpcService:
    """The `GrpcService` to mount on the server built by `grpc_server.start_grpc_server`."""
    servicer = InferenceServicer(engine=engine, auth=auth)
    return GrpcService(
        name=SERVICE_NAME,
        register=lambda server: tessera_pb2_grpc.add_InferenceServicer_to_server(servicer, server),
    )
