"""`repetition_penalty` over HTTP, the OpenAI-compatible routes (the vLLM-style extension
field) and gRPC, against a server whose default is 1.5: an omitted value gets the
default, a given one (1 = off) wins, an invalid one is refused with a message naming it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import openai
import pytest
import torch

from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc

from .conftest import engine_settings
from .servers import TinyServers, tiny_model_servers

AUTH = {"Authorization": "Bearer key-t1"}
MD = (("authorization", "Bearer key-t1"),)
DEFAULT = 1.5  # the server's serve_repetition_penalty in these tests
N = 24
PROMPT = "Hello, how are you today? I am fine"
BAD = [0.5, 0.0, -1.0, 2.5, 1e308, float("nan"), float("inf")]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServers]:
    settings = engine_settings(inference_max_tokens=N, serve_repetition_penalty=DEFAULT)
    with tiny_model_servers(tmp_path_factory.mktemp("penalty-api"), settings) as running:
        yield running


def reference(api: TinyServers, prompt: str, penalty: float) -> str:
    """transformers' greedy generate with `repetition_penalty`, decoded as the server does."""
    ids = torch.tensor([api.tokenizer.encode(prompt)])
    with torch.no_grad():
        out = api.base.generate(  # type: ignore[operator]  # causal LMs have generate()
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=N,
            do_sample=False,
            repetition_penalty=penalty,
        )
    return api.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.fixture(scope="module")
def expected(api: TinyServers) -> dict[float, str]:
    texts = {p: reference(api, PROMPT, p) for p in (1.0, DEFAULT, 2.0)}
    assert len(set(texts.values())) == 3, "the penalty must change this prompt's reply"
    return texts


def _post(api: TinyServers, path: str, body: dict[str, Any]) -> httpx.Response:
    """JSON as Python writes it, NaN and Infinity included (the server's parser takes them)."""
    headers = {**AUTH, "Content-Type": "application/json"}
    return httpx.post(f"{api.url}{path}", content=json.dumps(body), headers=headers, timeout=60)


@pytest.mark.parametrize(("given", "used"), [(None, DEFAULT), (1.0, 1.0), (2.0, 2.0)])
def test_http_generate(
    api: TinyServers, expected: dict[float, str], given: float | None, used: float
) -> None:
    body: dict[str, Any] = {"user_id": "ann", "prompt": PROMPT, "max_tokens": N}
    if given is not None:
        body["repetition_penalty"] = given
    r = _post(api, "/v1/generate", body)
    assert r.status_code == 200, r.text
    assert r.json()["text"] == expected[used]


@pytest.mark.parametrize("bad", BAD)
def test_http_generate_refuses_invalid(api: TinyServers, bad: float) -> None:
    r = _post(api, "/v1/generate", {"user_id": "ann", "prompt": PROMPT, "repetition_penalty": bad})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body", "repetition_penalty"]


@pytest.mark.parametrize(("given", "used"), [(None, DEFAULT), (1.0, 1.0), (2.0, 2.0)])
def test_openai_completions_extension_field(
    api: TinyServers, expected: dict[float, str], given: float | None, used: float
) -> None:
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="key-t1", max_retries=0)
    extra = {} if given is None else {"repetition_penalty": given}
    out = client.completions.create(
        model="tessera", prompt=PROMPT, max_tokens=N, temperature=0, user="ann", extra_body=extra
    )
    assert out.choices[0].text == expected[used]


def test_openai_chat_extension_field(api: TinyServers) -> None:
    """The chat route passes it too: the same text as the completion of its chat prompt."""
    messages = [{"role": "user", "content": "What did you do last weekend?"}]
    prompt = api.engine.codec.chat_prompt(messages)
    # Whether the tiny model's chat reply moves with the penalty depends on its random
    # weights (in CI it answered newlines either way); the completion tests above prove
    # the penalty changes text, this one that the chat route passes it through.
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="key-t1", max_retries=0)
    for penalty in (1.0, 2.0):
        out = client.chat.completions.create(
            model="tessera",
            messages=[{"role": "user", "content": messages[0]["content"]}],
            max_tokens=N,
            temperature=0,
            extra_body={"repetition_penalty": penalty},
        )
        assert out.choices[0].message.content == reference(api, prompt, penalty)


@pytest.mark.parametrize("bad", BAD)
def test_openai_refuses_invalid(api: TinyServers, bad: float) -> None:
    for path, body in (
        ("/v1/completions", {"prompt": PROMPT}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
    ):
        r = _post(api, path, {**body, "model": "tessera", "repetition_penalty": bad})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["param"] == "repetition_penalty" and error["code"] == "invalid_value"


@pytest.mark.parametrize(("given", "used"), [(None, DEFAULT), (1.0, 1.0), (2.0, 2.0)])
def test_grpc(
    api: TinyServers, expected: dict[float, str], given: float | None, used: float
) -> None:
    fields: dict[str, Any] = {"user_id": "ann", "prompt": PROMPT, "max_tokens": N}
    if given is not None:
        fields["repetition_penalty"] = given
    with grpc.insecure_channel(api.grpc_target) as channel:
        stub = tessera_pb2_grpc.InferenceStub(channel)
        request = tessera_pb2.GenerateRequest(**fields)
        assert stub.Generate(request, metadata=MD, timeout=60).text == expected[used]
        chunks = list(stub.GenerateStream(request, metadata=MD, timeout=60))
        assert "".join(c.text for c in chunks) == expected[used]


@pytest.mark.parametrize("bad", BAD)
def test_grpc_refuses_invalid(api: TinyServers, bad: float) -> None:
    request = tessera_pb2.GenerateRequest(user_id="ann", prompt=PROMPT, repetition_penalty=bad)
    with grpc.insecure_channel(api.grpc_target) as channel:
        stub = tessera_pb2_grpc.InferenceStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            stub.Generate(request, metadata=MD, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repetition_penalty must be within [1, 2]" in str(err.value.details())
