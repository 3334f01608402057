"""The gRPC server's limits come from settings (issue #13): request messages are capped
like HTTP bodies (`max_body_bytes`), and stop strings are bounded as on every API."""

from __future__ import annotations

import grpc
import pytest

from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.grpc_inference import inference_grpc_service
from tessera.services.grpc_server import GrpcLimits, start_grpc_server
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.sampling import MAX_STOP_CHARS, MAX_STOP_STRINGS

from .conftest import engine_settings
from .servers import authenticator

MD = (("authorization", "Bearer key-t1"),)


def _code(stub: tessera_pb2_grpc.InferenceStub, request: tessera_pb2.GenerateRequest) -> object:
    try:
        stub.Generate(request, metadata=MD, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_request_messages_are_capped_like_http_bodies(engine: InferenceEngine) -> None:
    settings = engine_settings(max_body_bytes=64 * 1024)
    running = start_grpc_server(
        [inference_grpc_service(engine=engine, auth=authenticator())],
        host="127.0.0.1",
        port=0,
        limits=GrpcLimits.from_settings(settings),
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = tessera_pb2_grpc.InferenceStub(channel)
            small = tessera_pb2.GenerateRequest(user_id="ann", prompt="x" * 1000, max_tokens=2)
            assert _code(stub, small) == grpc.StatusCode.OK
            big = tessera_pb2.GenerateRequest(user_id="ann", prompt="x" * 100_000, max_tokens=2)
            # Refused by the transport before any handler (or the tokenizer) sees it.
            assert _code(stub, big) == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        running.stop(0.5)


@pytest.mark.parametrize(
    ("stop", "ok"),
    [
        (["a"] * MAX_STOP_STRINGS, True),
        (["a"] * (MAX_STOP_STRINGS + 1), False),
        (["b" * MAX_STOP_CHARS], True),
        (["b" * (MAX_STOP_CHARS + 1)], False),
        ([""], False),
    ],
)
def test_stop_strings_are_bounded_on_grpc(
    engine: InferenceEngine, stop: list[str], ok: bool
) -> None:
    running = start_grpc_server(
        [inference_grpc_service(engine=engine, auth=authenticator())], host="127.0.0.1", port=0
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = tessera_pb2_grpc.InferenceStub(channel)
            request = tessera_pb2.GenerateRequest(user_id="ann", prompt="hi", max_tokens=2,
                                                  stop=stop)
            expected = grpc.StatusCode.OK if ok else grpc.StatusCode.INVALID_ARGUMENT
            assert _code(stub, request) == expected
            long_user = tessera_pb2.GenerateRequest(user_id="u" * 129, prompt="hi", max_tokens=2)
            assert _code(stub, long_user) == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        running.stop(0.5)
