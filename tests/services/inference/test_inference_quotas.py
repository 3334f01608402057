"""Per-tenant inference quotas against the real app and engine (tiny model): tenant t1,
hammered past its requests per second, gets 429 + Retry-After (OpenAI route too) while
t2's requests at the same time are all served; generated tokens are charged when a
request ends, and a tenant in token debt is refused (gRPC RESOURCE_EXHAUSTED)."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from tessera.events.tenants import TenantQuota
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.grpc_inference import inference_grpc_service
from tessera.services.grpc_server import start_grpc_server
from tessera.services.inference.build import build_engine
from tessera.services.inference.engine import InferenceEngine
from tessera.services.quotas import Rates, TenantQuotas

from .conftest import Served3, engine_settings
from .helpers import byte_tokenizer
from .servers import authenticator, http_server

T1 = {"Authorization": "Bearer key-t1"}
T2 = {"Authorization": "Bearer key-t2"}


def _engine(served3: Served3, t1: TenantQuota) -> InferenceEngine:
    quotas = TenantQuotas(Rates(events=0, requests=0, tokens=0), overrides={"t1": t1}.get,
                          burst_s=1.0)
    return build_engine(
        copy.deepcopy(served3.base),
        byte_tokenizer(),
        served3.store,
        served3.lookup,
        settings=engine_settings(),
        quotas=quotas,
    ).start()


@pytest.fixture()
def limited(served3: Served3) -> Iterator[InferenceEngine]:
    engine = _engine(served3, TenantQuota(inference_requests_per_s=2))
    yield engine
    engine.stop()


def test_a_tenant_past_its_request_quota_gets_429_while_another_is_served(
    limited: InferenceEngine,
) -> None:
    results: dict[str, list[tuple[int, float, httpx.Response]]] = {"t1": [], "t2": []}
    chats: list[httpx.Response] = []
    lock = threading.Lock()

    def call(tenant: str, headers: dict[str, str]) -> None:
        started = time.monotonic()
        resp = httpx.post(f"{url}/v1/generate", headers=headers, timeout=60,
                          json={"user_id": "ann", "prompt": "Hello", "max_tokens": 2})
        with lock:
            results[tenant].append((resp.status_code, time.monotonic() - started, resp))

    def chat() -> None:  # the OpenAI-compatible route, in the same hammering
        resp = httpx.post(f"{url}/v1/chat/completions", headers=T1, timeout=60,
                          json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        with lock:
            chats.append(resp)

    with http_server(limited) as url:
        threads = [threading.Thread(target=call, args=("t1", T1)) for _ in range(16)]
        threads += [threading.Thread(target=call, args=("t2", T2)) for _ in range(8)]
        threads += [threading.Thread(target=chat) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    t1_codes = [code for code, _, _ in results["t1"]]
    assert set(t1_codes) <= {200, 429} and t1_codes.count(429) >= 10, t1_codes
    assert 200 in t1_codes  # its burst (1 s of 2 requests/s) was served
    for code, _, resp in results["t1"]:
        if code == 429:
            assert int(resp.headers["retry-after"]) >= 1
            assert "quota of 2 inference requests per second" in resp.json()["detail"]
    assert [code for code, _, _ in results["t2"]] == [200] * 8
    assert max(s for _, s, _ in results["t2"]) < 10.0
    # The OpenAI-compatible route refuses the same way, in OpenAI's error shape.
    refused = [c for c in chats if c.status_code != 200]
    assert refused and {c.status_code for c in refused} == {429}, [c.text for c in chats]
    assert all(c.headers["retry-after"] for c in refused)
    assert "quota" in refused[0].json()["error"]["message"]


def test_generated_tokens_are_charged_and_debt_is_resource_exhausted(served3: Served3) -> None:
    engine = _engine(served3, TenantQuota(inference_tokens_per_s=4))  # holds 4 tokens
    running = start_grpc_server(
        [inference_grpc_service(engine=engine, auth=authenticator())], host="127.0.0.1", port=0
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = tessera_pb2_grpc.InferenceStub(channel)
            req = tessera_pb2.GenerateRequest(user_id="ann", prompt="Hello", max_tokens=40)
            first = stub.Generate(req, metadata=(("authorization", "Bearer key-t1"),))
            assert first.completion_tokens >= 8  # a debt of at least 4 tokens: >= 1 s
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(req, metadata=(("authorization", "Bearer key-t1"),))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "generated tokens" in (err.value.details() or "")
            # t2 has no limit and is served meanwhile.
            assert stub.Generate(req, metadata=(("authorization", "Bearer key-t2"),)).text
    finally:
        running.stop(0.5)
        engine.stop()
