"""HTTP, SSE, OpenAI-compatible (real `openai` client) and gRPC against real servers."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import grpc
import httpx
import openai
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from openai.types.chat import ChatCompletionMessageParam
from transformers import AutoModelForCausalLM, AutoTokenizer

from tessera.bench.tiny_model import build_tiny_model
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.grpc_inference import inference_grpc_service
from tessera.services.grpc_server import start_grpc_server
from tessera.services.inference.build import build_engine
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.revisions import BASE, Served
from tessera.services.inference.tokens import HFTokenizer, as_hf_tokenizer

from .conftest import TARGETS, engine_settings
from .helpers import DirStore, make_peft, save_blob
from .servers import authenticator, http_server

AUTH = {"Authorization": "Bearer key-t1"}


@dataclass
class Api:
    url: str
    engine: InferenceEngine
    tokenizer: HFTokenizer
    peft: dict[str, torch.nn.Module]
    base: torch.nn.Module
    table: dict[tuple[str, str], Served]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api")
    folder = build_tiny_model(root / "tiny")
    base = AutoModelForCausalLM.from_pretrained(folder)
    base.eval()  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated
    tokenizer = as_hf_tokenizer(AutoTokenizer.from_pretrained(folder))
    peft, table = {}, {}
    for i, user in enumerate(["ann", "bob"]):
        pm = make_peft(base, 20 + i, r=4, alpha=8, targets=TARGETS)
        _, digest = save_blob(pm, root / "blobs", r=4, alpha=8, targets=TARGETS)
        peft[user] = pm
        table[("t1", user)] = Served(f"rev-{user}", digest, "personal")

    def lookup(tenant: str, user: str) -> Served:
        return table.get((tenant, user), BASE)

    engine = build_engine(
        copy.deepcopy(base),
        tokenizer,
        DirStore(root / "blobs"),
        lookup,
        settings=engine_settings(inference_max_tokens=32),
    ).start()
    with http_server(engine) as url:
        yield Api(url, engine, tokenizer, peft, base, table)
    engine.stop()


def _greedy(api: Api, model: torch.nn.Module, prompt: str, n: int) -> str:
    ids = torch.tensor([api.tokenizer.encode(prompt)])
    with torch.no_grad():
        # nn.Module.__getattr__ types generate() as Tensor | Module; the transformers and
        # peft causal LMs passed here have it.
        out = model.generate(  # type: ignore[operator]
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
        )
    return api.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_generate_http(api: Api) -> None:
    body = {"user_id": "ann", "prompt": "Hello, how are", "max_tokens": 10}
    assert httpx.post(f"{api.url}/v1/generate", json=body).status_code == 401
    r = httpx.post(f"{api.url}/v1/generate", json=body, headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["revision"] == {
        "revision_id": "rev-ann",
        "adapter_digest": api.table[("t1", "ann")].adapter_digest,
        "source": "personal",
    }
    assert out["text"] == _greedy(api, api.peft["ann"], "Hello, how are", 10)
    # another tenant's key does not reach t1's users: t2/ann is served the base model
    r2 = httpx.post(
        f"{api.url}/v1/generate", json=body, headers={"X-API-Key": "key-t2"}, timeout=30
    )
    assert r2.json()["revision"]["source"] == "base"
    assert r2.json()["text"] == _greedy(api, api.base, "Hello, how are", 10)
    bad = httpx.post(f"{api.url}/v1/generate", json={**body, "max_tokens": 33}, headers=AUTH)
    assert bad.status_code == 400 and "exceeds" in bad.json()["detail"]


def test_generate_sse(api: Api) -> None:
    body = {"user_id": "bob", "prompt": "The weather is", "max_tokens": 12, "stream": True}
    pieces, final = [], None
    with httpx.stream("POST", f"{api.url}/v1/generate", json=body, headers=AUTH, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-tessera-revision"] == "rev-bob"
        for line in r.iter_lines():
            if line.startswith("data: "):
                event = json.loads(line[6:])
                if event.get("done"):
                    final = event
                else:
                    pieces.append(event["text"])
    assert final is not None and final["revision"]["revision_id"] == "rev-bob"
    assert "".join(pieces) == final["text"] == _greedy(api, api.peft["bob"], "The weather is", 12)


def test_openai_client(api: Api) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="key-t1", max_retries=0)
    messages: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "What is the capital of France?"}
    ]
    chat = client.chat.completions.create(
        model="tessera", messages=messages, user="ann", temperature=0, max_tokens=8
    )
    prompt = api.tokenizer.apply_chat_template(
        cast(list[dict[str, str]], messages),  # plain role/content string pairs
        tokenize=False,
        add_generation_prompt=True,
    )
    assert chat.choices[0].message.content == _greedy(api, api.peft["ann"], prompt, 8)
    assert chat.system_fingerprint == "rev-ann" and chat.usage is not None
    assert chat.usage.completion_tokens <= 8
    stream = client.chat.completions.create(
        model="tessera", messages=messages, user="ann", temperature=0, max_tokens=8, stream=True
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert streamed == chat.choices[0].message.content
    comp = client.completions.create(
        model="tessera", prompt="I think that", user="bob", temperature=0, max_tokens=6
    )
    assert comp.choices[0].text == _greedy(api, api.peft["bob"], "I think that", 6)
    # no `user`: the tenant prior, else the base model
    plain = client.completions.create(
        model="tessera", prompt="I think that", temperature=0, max_tokens=6
    )
    assert plain.system_fingerprint == "base"
    assert plain.choices[0].text == _greedy(api, api.base, "I think that", 6)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{api.url}/v1", api_key="nope", max_retries=0).completions.create(
            model="tessera", prompt="x", max_tokens=1
        )


def test_openapi_docs(api: Api) -> None:
    spec = httpx.get(f"{api.url}/openapi.json").json()
    for path in ("/v1/generate", "/v1/chat/completions", "/v1/completions"):
        assert path in spec["paths"]
    assert httpx.get(f"{api.url}/docs").status_code == 200


def test_queue_full_is_503(api: Api, tmp_path: Path) -> None:
    small = build_engine(
        copy.deepcopy(api.base),
        api.tokenizer,
        DirStore(tmp_path),
        lambda t, u: BASE,
        settings=engine_settings(inference_queue_size=1, inference_max_batch=1),
    ).start()
    codes: list[int] = []
    try:
        with http_server(small) as url:

            def call() -> None:
                r = httpx.post(
                    f"{url}/v1/generate",
                    headers=AUTH,
                    timeout=60,
                    json={"user_id": "x", "prompt": "Hello", "max_tokens": 64},
                )
                codes.append(r.status_code)
                if r.status_code == 503:
                    assert "queue is full" in r.json()["detail"] and r.headers["retry-after"]

            threads = [threading.Thread(target=call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        small.stop()
    assert 503 in codes and 200 in codes and set(codes) <= {200, 503}


def test_grpc(api: Api) -> None:
    running = start_grpc_server(
        [inference_grpc_service(engine=api.engine, auth=authenticator())], host="127.0.0.1", port=0
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="tessera.v1.Inference")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = tessera_pb2_grpc.InferenceStub(channel)
            req = tessera_pb2.GenerateRequest(user_id="ann", prompt="Hello, how are", max_tokens=10)
            with pytest.raises(grpc.RpcError) as err:
                stub.Generate(req)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            md = (("authorization", "Bearer key-t1"),)
            res = stub.Generate(req, metadata=md)
            assert res.text == _greedy(api, api.peft["ann"], "Hello, how are", 10)
            assert res.revision.revision_id == "rev-ann" and res.revision.source == "personal"
            chunks = list(stub.GenerateStream(req, metadata=md))
            assert chunks[-1].done and chunks[-1].finish_reason in ("stop", "length")
            assert "".join(c.text for c in chunks) == res.text
            with pytest.raises(grpc.RpcError) as err2:
                stub.Generate(
                    tessera_pb2.GenerateRequest(user_id="ann", prompt="x", max_tokens=999),
                    metadata=md,
                )
            assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    finally:
        running.stop(0.5)
