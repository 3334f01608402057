"""No tenant's request can fail another's (issue #13): every sampling parameter at its
extremes (0, tiny, huge, NaN/inf where a float is taken), sent over HTTP, the
OpenAI-compatible API and gRPC by tenant t1 while tenant t2's request is streaming on the
same engine. The bad request fails alone (4xx / INVALID_ARGUMENT / its own timeout) or is
served clamped; the other one always runs to its end."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx
import pytest
import torch

from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.inference.build import build_engine
from tessera.services.inference.requests import EngineError, GenerateRequest
from tessera.services.inference.sampling import SamplingParams, choose_tokens

from .conftest import engine_settings
from .helpers import DirStore
from .servers import TinyServers, base_for_everyone, tiny_model_servers

NORMAL_TOKENS = 96  # long enough that the bad request lands while this one runs
BAD = {"Authorization": "Bearer key-t1"}
GOOD = {"Authorization": "Bearer key-t2"}
NAN, INF = float("nan"), float("inf")
pytestmark = pytest.mark.slow  # about a hundred requests, each beside a 96-token stream


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyServers]:
    settings = engine_settings(inference_max_tokens=NORMAL_TOKENS)
    with tiny_model_servers(tmp_path_factory.mktemp("isolation"), settings) as running:
        yield running


@dataclass
class _Normal:
    """Tenant t2's streamed request, run in a thread."""

    started: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    final: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    ended_at: float = 0.0


def _run_normal(url: str, out: _Normal) -> None:
    body = {
        "user_id": "norm",
        "prompt": "Once upon a time",
        "max_tokens": NORMAL_TOKENS,
        "stream": True,
    }
    try:
        with httpx.stream("POST", f"{url}/v1/generate", json=body, headers=GOOD, timeout=60) as r:
            out.status = r.status_code
            for line in r.iter_lines():
                if line.startswith("event: error"):
                    out.errors.append(line)
                if line.startswith("data: "):
                    out.started.set()
                    data = json.loads(line[6:])
                    if data.get("done"):
                        out.final = data
                    elif "detail" in data:
                        out.errors.append(data["detail"])
    finally:
        out.ended_at = time.monotonic()
        out.started.set()


def _beside_a_normal_request(servers: TinyServers, bad: Callable[[], object]) -> object:
    """Run `bad` while tenant t2's stream is under way; check t2's stream ran whole and
    was still running when `bad` was answered. Returns what `bad` returned."""
    normal = _Normal()
    thread = threading.Thread(target=_run_normal, args=(servers.url, normal), daemon=True)
    thread.start()
    assert normal.started.wait(30)
    answer = bad()
    answered_at = time.monotonic()
    thread.join(60)
    assert normal.status == 200 and not normal.errors, normal.errors
    assert normal.final is not None, "the other tenant's stream ended without its result"
    assert normal.final["usage"]["completion_tokens"] == NORMAL_TOKENS
    assert normal.ended_at > answered_at, "the requests did not overlap; lengthen NORMAL_TOKENS"
    return answer


# (field, value) pairs: 0, tiny, huge, NaN / inf for floats; edges and overflows for ints;
# empty, many and long stop strings.
HTTP_CASES: list[tuple[str, Any]] = [
    ("temperature", 0.0),
    ("temperature", 1e-38),
    ("temperature", 1e-300),
    ("temperature", 5.0),
    ("temperature", 1e308),
    ("temperature", NAN),
    ("temperature", INF),
    ("top_p", 0.0),
    ("top_p", 1e-38),
    ("top_p", 1.0),
    ("top_p", 1e308),
    ("top_p", NAN),
    ("max_tokens", 0),
    ("max_tokens", 10**12),
    ("seed", 0),
    ("seed", 2**64 - 1),
    ("seed", 2**64),
    ("seed", 10**40),
    ("timeout_s", 0.0),
    ("timeout_s", 1e-9),
    ("timeout_s", 1e308),
    ("timeout_s", NAN),
    ("stop", [""]),
    ("stop", ["x"] * 100),
    ("stop", ["y" * 10_000]),
]
# Sampled cases also carry a temperature, so top_p and seed really take part.
SAMPLED = {"top_p", "seed"}


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    """POST as tenant t1; NaN and inf written as Python's json writes them (`NaN`,
    `Infinity`), which the server's JSON parser accepts."""
    content = json.dumps(body).encode()
    headers = {**BAD, "Content-Type": "application/json"}
    return httpx.post(url, content=content, headers=headers, timeout=60)


def _ok_http(r: httpx.Response) -> None:
    assert r.status_code in (200, 400, 422, 504), (r.status_code, r.text)
    r.json()  # an answer, not a broken body


@pytest.mark.parametrize(("name", "value"), HTTP_CASES)
def test_http_generate_extremes_fail_alone(servers: TinyServers, name: str, value: Any) -> None:
    body: dict[str, Any] = {"user_id": "bad", "prompt": "hi", "max_tokens": 4, name: value}
    if name in SAMPLED:
        body["temperature"] = 1e-38
    r = _beside_a_normal_request(servers, lambda: _post(f"{servers.url}/v1/generate", body))
    assert isinstance(r, httpx.Response)
    _ok_http(r)


OPENAI_CASES: list[tuple[str, Any]] = [
    *[(n, v) for n, v in HTTP_CASES if n != "timeout_s"],
    ("max_completion_tokens", 0),
    ("max_completion_tokens", 10**12),
]


@pytest.mark.parametrize(("name", "value"), OPENAI_CASES)
def test_openai_chat_extremes_fail_alone(servers: TinyServers, name: str, value: Any) -> None:
    body: dict[str, Any] = {
        "model": "tessera",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        name: value,
    }
    if name in SAMPLED:
        body["temperature"] = 1e-38
    r = _beside_a_normal_request(
        servers,
        lambda: _post(f"{servers.url}/v1/chat/completions", body),
    )
    assert isinstance(r, httpx.Response)
    _ok_http(r)


GRPC_CASES: list[tuple[str, Any]] = [
    ("temperature", 0.0),
    ("temperature", 1e-38),
    ("temperature", 3e38),
    ("temperature", NAN),
    ("temperature", INF),
    ("temperature", -1.0),
    ("top_p", 0.0),
    ("top_p", 1e-38),
    ("top_p", 3e38),
    ("top_p", NAN),
    ("max_tokens", 2**32 - 1),
    ("seed", 0),
    ("seed", 2**64 - 1),
    ("timeout_s", 1e-38),
    ("timeout_s", 3e38),
    ("timeout_s", NAN),
    ("timeout_s", -1.0),
    ("timeout_s", INF),
    ("stop", [""]),
    ("stop", ["x"] * 100),
    ("stop", ["y" * 10_000]),
]
GRPC_OK = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED}
# GenerateStream shares Generate's validation; a few cases show it fails alone too.
GRPC_STREAMED = [
    ("temperature", 1e-38),
    ("temperature", NAN),
    ("top_p", NAN),
    ("timeout_s", 3e38),
    ("stop", ["x"] * 100),
]


@pytest.mark.parametrize(
    ("name", "value", "streamed"),
    [(n, v, False) for n, v in GRPC_CASES] + [(n, v, True) for n, v in GRPC_STREAMED],
)
def test_grpc_extremes_fail_alone(
    servers: TinyServers, name: str, value: Any, streamed: bool
) -> None:
    fields: dict[str, Any] = {"user_id": "bad", "prompt": "hi", "max_tokens": 4, name: value}
    if name in SAMPLED:
        fields["temperature"] = 1e-38
    request = tessera_pb2.GenerateRequest(**fields)
    md = (("authorization", BAD["Authorization"]),)

    def bad() -> grpc.StatusCode:
        with grpc.insecure_channel(servers.grpc_target) as channel:
            stub = tessera_pb2_grpc.InferenceStub(channel)
            try:
                if streamed:
                    chunks = list(stub.GenerateStream(request, metadata=md, timeout=60))
                    assert chunks[-1].done
                else:
                    stub.Generate(request, metadata=md, timeout=60)
            except grpc.RpcError as exc:
                code: grpc.StatusCode = exc.code()
                return code
        return grpc.StatusCode.OK

    code = _beside_a_normal_request(servers, bad)
    assert code in GRPC_OK | {grpc.StatusCode.OK}, code


def test_tiny_temperature_is_greedy() -> None:
    """Below 1e-2 a temperature is greedy: the same text as temperature 0, whatever seed."""
    for t in (1e-38, 1e-3, 0.0):
        assert SamplingParams(temperature=t, seed=3).greedy
    assert not SamplingParams(temperature=0.02).greedy
    for bad in (NAN, INF, -1.0, 5.01):
        with pytest.raises(ValueError, match="temperature"):
            SamplingParams(temperature=bad)


def test_an_error_in_one_sequences_step_fails_only_it(servers: TinyServers) -> None:
    """A request whose own step raises (here: parameters that slipped past validation)
    fails alone; the sequences sharing its batch run on to their end."""
    engine = servers.engine
    good = engine.submit(
        GenerateRequest("t2", "norm", "Once upon a time", SamplingParams(max_tokens=60))
    )
    broken = SamplingParams(max_tokens=8)
    object.__setattr__(broken, "stop", 5)  # iterating it raises TypeError in the step
    bad = engine.submit(GenerateRequest("t1", "bad", "hi", broken))
    with pytest.raises(EngineError):
        bad.result()
    assert good.result().completion_tokens == 60


def test_nan_logits_sample_a_real_token() -> None:
    """Probabilities are sanitised: NaN / inf logits still give a token id in range."""
    logits = torch.tensor(
        [[NAN, 1.0, 2.0], [INF, -INF, 0.0], [NAN, NAN, NAN], [-INF, -INF, -INF], [0.0, 9.0, 1.0]]
    )
    params = [SamplingParams(temperature=1.0, seed=1)] * 4 + [SamplingParams(temperature=0.5)]
    gens = [torch.Generator().manual_seed(1) for _ in params]
    tokens = choose_tokens(logits, params, gens)
    assert all(0 <= t < 3 for t in tokens)
    assert tokens[1] == 0  # +inf is the only candidate


def test_a_cancelled_waiting_request_frees_its_blocked_caller(servers: TinyServers) -> None:
    """A blocking caller (a gRPC handler thread) whose client went away while its request
    still waited for a batch row returns at once, not after its timeout: one tenant's
    abandoned calls cannot hold the threads every tenant's calls need."""
    settings = engine_settings(inference_max_batch=1, inference_max_tokens=NORMAL_TOKENS)
    engine = build_engine(
        copy.deepcopy(servers.base),
        servers.tokenizer,
        DirStore(servers.blobs),
        base_for_everyone,
        settings=settings,
    ).start()
    try:
        long = engine.submit(
            GenerateRequest("t2", "norm", "Once", SamplingParams(max_tokens=NORMAL_TOKENS))
        )
        waiting = engine.submit(GenerateRequest("t1", "gone", "hi", SamplingParams(max_tokens=4)))
        errors: list[BaseException] = []
        done = threading.Event()

        def wait() -> None:
            try:
                waiting.result()
            except EngineError as exc:
                errors.append(exc)
            done.set()

        threading.Thread(target=wait, daemon=True).start()
        waiting.cancel()  # what the gRPC servicer's callback does when the client leaves
        assert done.wait(5), "the blocked caller was not released"
        assert errors and "cancel" in str(errors[0])
        assert long.result().completion_tokens == NORMAL_TOKENS
    finally:
        engine.stop()
