"""The OpenAI surface with the real `openai` client: `/v1/models`, `model` addressing
(`user:<id>`, `user:<id>@<revision>`, `prior`, the base), content parts, streaming usage,
`n`, and OpenAI's error envelope on 401/404/422/429."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
import torch

from tessera.events.tenants import TenantQuota
from tessera.schemas.events import PRIOR_USER_ID
from tessera.services.inference.build import build_engine
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.revisions import BASE, Served
from tessera.services.quotas import Rates, TenantQuotas

from .conftest import TARGETS, engine_settings
from .helpers import DirStore, byte_tokenizer, make_peft, save_blob, tiny_model
from .servers import http_server

BASE_ID = "tiny-base"


@dataclass
class Setup:
    url: str
    engine: InferenceEngine
    models: dict[str, torch.nn.Module]  # revision id (or "base") -> reference model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("openai")
    base = tiny_model()
    models: dict[str, torch.nn.Module] = {"base": base}
    served: dict[str, Served] = {}
    for i, (rev, user) in enumerate(
        [("rev-ann-1", "ann"), ("rev-ann-2", "ann"), ("rev-prior-1", PRIOR_USER_ID)]
    ):
        pm = make_peft(base, 40 + i, r=4, alpha=8, targets=TARGETS)
        _, digest = save_blob(pm, root / "blobs", r=4, alpha=8, targets=TARGETS)
        models[rev] = pm
        served[rev] = Served(rev, digest, "prior" if user == PRIOR_USER_ID else "personal")
    heads = {("t1", "ann"): served["rev-ann-2"], ("t1", PRIOR_USER_ID): served["rev-prior-1"]}
    owners = {"rev-ann-1": ("t1", "ann"), "rev-ann-2": ("t1", "ann")}
    owners["rev-prior-1"] = ("t1", PRIOR_USER_ID)

    def lookup(tenant: str, user: str) -> Served:
        return heads.get((tenant, user)) or heads.get((tenant, PRIOR_USER_ID)) or BASE

    def pin(tenant: str, user: str, revision: str) -> Served | None:
        return served[revision] if owners.get(revision) == (tenant, user) else None

    engine = build_engine(
        copy.deepcopy(base),
        byte_tokenizer(),
        DirStore(root / "blobs"),
        lookup,
        settings=engine_settings(),
        pin_lookup=pin,
        model_id=BASE_ID,
    ).start()
    with http_server(engine) as url:
        yield Setup(url, engine, models)
    engine.stop()


def _client(setup: Setup, key: str = "key-t1") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{setup.url}/v1", api_key=key, max_retries=0)


def _greedy(setup: Setup, revision: str, prompt: str, n: int) -> str:
    tok = byte_tokenizer()
    ids = torch.tensor([tok.encode(prompt)])
    with torch.no_grad():
        out = setup.models[revision].generate(  # type: ignore[operator]
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False
        )
    return tok.decode(out[0, ids.shape[1] :].tolist())


def test_models_list_and_retrieve(setup: Setup) -> None:
    client = _client(setup)
    page = client.models.list()
    assert [m.id for m in page.data] == [BASE_ID, "prior"]
    assert (page.model_extra or {})["tessera_naming"]["pinned"] == "user:<user_id>@<revision_id>"
    assert client.models.retrieve("user:ann@rev-ann-1").id == "user:ann@rev-ann-1"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-4o")
    assert err.value.code == "model_not_found" and err.value.param == "model"
    # another tenant has no prior yet and cannot see t1's revisions
    other = _client(setup, "key-t2")
    assert [m.id for m in other.models.list().data] == [BASE_ID]
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve("user:ann@rev-ann-1")


@pytest.mark.parametrize(
    ("model", "user", "revision"),
    [
        ("user:ann", None, "rev-ann-2"),
        ("user:ann@rev-ann-1", None, "rev-ann-1"),
        ("prior", None, "rev-prior-1"),
        ("prior@rev-prior-1", None, "rev-prior-1"),
        ("user:zed", None, "rev-prior-1"),  # no head of their own: the prior
        (BASE_ID, None, "base"),
        (BASE_ID, "ann", "rev-ann-2"),  # the `user` field still routes
        ("tessera", "ann", "rev-ann-2"),
        ("tessera", None, "rev-prior-1"),
    ],
)
def test_model_selects_revision(setup: Setup, model: str, user: str | None, revision: str) -> None:
    out = _client(setup).completions.create(
        model=model, prompt="Hello there", temperature=0, max_tokens=6, user=user or openai.omit
    )
    assert out.system_fingerprint == revision
    assert out.choices[0].text == _greedy(setup, revision, "Hello there", 6)


def test_pin_must_be_the_users(setup: Setup) -> None:
    client = _client(setup)
    for model in ("user:bob@rev-ann-1", "user:ann@rev-nope", "prior@rev-ann-1", "user:"):
        with pytest.raises(openai.NotFoundError) as err:
            client.completions.create(model=model, prompt="x", max_tokens=1)
        assert err.value.code == "model_not_found", model
    with pytest.raises(openai.NotFoundError):
        _client(setup, "key-t2").completions.create(
            model="user:ann@rev-ann-1", prompt="x", max_tokens=1
        )


def test_content_parts_stream_usage_and_n(setup: Setup) -> None:
    client = _client(setup)
    plain = client.chat.completions.create(
        model="user:ann",
        messages=[{"role": "user", "content": "Hi\nthere"}],
        temperature=0,
        max_tokens=8,
    )
    parts = client.chat.completions.create(
        model="user:ann",
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}],
            }
        ],
        temperature=0,
        max_tokens=8,
    )
    assert parts.choices[0].message.content == plain.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="user:ann",
            messages=[{"role": "user", "content": "Hi\nthere"}],
            temperature=0,
            max_tokens=8,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    many = client.completions.create(
        model="user:ann", prompt="Once", temperature=1.0, seed=7, max_tokens=8, n=3
    )
    assert [c.index for c in many.choices] == [0, 1, 2]
    assert len({c.text for c in many.choices}) > 1  # seeds 7, 8, 9: different samples
    assert many.usage is not None and many.usage.completion_tokens > 8
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="user:ann", prompt="x", max_tokens=1, n=9)
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="user:ann", prompt="x", max_tokens=1, n=2, stream=True)


def _envelope(resp: httpx.Response) -> dict[str, object]:
    body = resp.json()
    assert set(body) == {"error"}, body  # no FastAPI `detail` leaks
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


def _declared_too_large(base: str, path: str) -> dict[str, Any]:
    """POST declaring a 64 MiB body without sending it (httpx will not): the 413's JSON."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer key-t1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {64 * 1024 * 1024}\r\n\r\n"
        )
        sock.sendall(head.encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    assert b" 413 " in status_line, status_line
    body: dict[str, Any] = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert set(body) == {"error"}
    return body


def test_errors_in_openai_envelope(setup: Setup) -> None:
    with pytest.raises(openai.AuthenticationError) as auth:
        _client(setup, "nope").models.list()
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        _client(setup).chat.completions.create(model="user:ann", messages=[])
    assert bad.value.param == "messages"
    url, key = f"{setup.url}/v1", {"Authorization": "Bearer key-t1"}
    assert _envelope(httpx.get(f"{url}/models"))["code"] == "invalid_api_key"
    assert _envelope(httpx.get(f"{url}/models/nope", headers=key))["code"] == "model_not_found"
    wrong = httpx.post(f"{url}/completions", headers=key, json={"prompt": 3})
    assert wrong.status_code == 422 and _envelope(wrong)["type"] == "invalid_request_error"
    quotas = TenantQuotas(
        Rates(events=0, requests=0, tokens=0),
        overrides={"t1": TenantQuota(inference_requests_per_s=0.001)}.get,
        burst_s=1.0,
    )
    setup.engine.quotas = quotas
    try:
        body = {"model": "user:ann", "prompt": "x", "max_tokens": 1}
        codes = [httpx.post(f"{url}/completions", headers=key, json=body) for _ in range(3)]
    finally:
        setup.engine.quotas = None
    limited = codes[-1]
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    assert _envelope(limited)["type"] == "rate_limit_error"
    huge = _declared_too_large(setup.url, "/v1/completions")
    assert huge["error"]["code"] == "request_too_large"
    with pytest.raises(openai.NotFoundError) as missing:
        _client(setup).embeddings.create(model="user:ann", input="x")
    assert missing.value.code == "unknown_url"
    # Tessera's own routes keep FastAPI's shape
    assert "detail" in httpx.post(f"{setup.url}/v1/generate", json={}).json()


def test_models_path_is_keyed_and_tenant_scoped(setup: Setup) -> None:
    assert httpx.get(f"{setup.url}/v1/models/prior").status_code == 401
    got = httpx.get(f"{setup.url}/v1/models/prior", headers={"Authorization": "Bearer key-t1"})
    assert got.json()["tessera_revision"] == "rev-prior-1"
