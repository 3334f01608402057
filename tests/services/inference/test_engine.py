"""The engine: batched users get their own adapter's output; sampling, stops, limits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.requests import (
    GenerateRequest,
    GenerateResult,
    InvalidRequestError,
    QueueFullError,
    RequestTimeoutError,
    TokenEvent,
)
from tessera.services.inference.sampling import SamplingParams

from .conftest import Served3, engine_settings
from .helpers import byte_tokenizer

TOK = byte_tokenizer()


def greedy(model: nn.Module, prompt: str, n: int) -> str:
    """Reference: plain greedy decoding with the full model, no cache, one sequence."""
    ids = torch.tensor([TOK.encode(prompt)])
    out: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            t = int(model(input_ids=ids).logits[0, -1].argmax())
            if t == TOK.eos_token_id:
                break
            out.append(t)
            ids = torch.cat([ids, torch.tensor([[t]])], 1)
    return TOK.decode(out)


def test_concurrent_users_get_their_own_adapter(engine: InferenceEngine, served3: Served3) -> None:
    prompts = {"ann": "hello there", "bob": "hi", "cyd": "a much longer prompt, here", "dan": "yo"}
    gens = {
        u: engine.submit(GenerateRequest("t1", u, p, SamplingParams(max_tokens=12)))
        for u, p in prompts.items()
    }
    results = {u: g.result() for u, g in gens.items()}
    for user, prompt in prompts.items():
        model = served3.peft.get(user, served3.base)
        assert results[user].text == greedy(model, prompt, 12), user
    assert results["ann"].revision.name == "rev-ann-1"
    assert results["dan"].revision.name == "base" and results["dan"].revision.source == "base"
    # the adapters matter: ann's answer differs from the base model's
    assert results["ann"].text != greedy(served3.base, prompts["ann"], 12)
    assert engine.steps < 4 * 12  # the users shared forward steps


def test_late_joiner_shares_decode_steps(engine: InferenceEngine, served3: Served3) -> None:
    first = engine.submit(GenerateRequest("t1", "ann", "first", SamplingParams(max_tokens=40)))
    stream = first.events()
    next(stream)  # ann is decoding
    late = engine.submit(GenerateRequest("t1", "bob", "second", SamplingParams(max_tokens=5)))
    late_result = late.result()
    rest = [e for e in stream if isinstance(e, GenerateResult)]
    assert late_result.text == greedy(served3.peft["bob"], "second", 5)
    assert rest[0].text == greedy(served3.peft["ann"], "first", 40)
    assert rest[0].total_s > late_result.total_s  # bob finished while ann was still running


def test_streaming_pieces_add_up_and_stop_strings_cut(
    engine: InferenceEngine, served3: Served3
) -> None:
    full = greedy(served3.peft["bob"], "stream me", 30)
    stop = full[10:13]
    gen = engine.submit(
        GenerateRequest("t1", "bob", "stream me", SamplingParams(max_tokens=30, stop=(stop,)))
    )
    pieces, result = [], None
    for event in gen.events():
        if isinstance(event, TokenEvent):
            pieces.append(event.text)
        else:
            result = event
    assert result is not None and result.finish_reason == "stop"
    assert result.text == full[: full.find(stop)]
    assert "".join(pieces) == result.text  # nothing past the stop string was streamed
    long = engine.submit(GenerateRequest("t1", "bob", "stream me", SamplingParams(max_tokens=7)))
    res = long.result()
    assert res.finish_reason == "length" and res.completion_tokens == 7


def test_seeded_sampling_is_reproducible_in_any_batch(engine: InferenceEngine) -> None:
    params = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=1234)
    alone = engine.submit(GenerateRequest("t1", "cyd", "sample", params)).result().text
    others = [
        engine.submit(
            GenerateRequest(
                "t1", u, "noise", SamplingParams(max_tokens=16, temperature=1.0, seed=i)
            )
        )
        for i, u in enumerate(["ann", "bob"])
    ]
    crowded = engine.submit(GenerateRequest("t1", "cyd", "sample", params))
    assert crowded.result().text == alone
    other_seed = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, seed=99)
    assert engine.submit(GenerateRequest("t1", "cyd", "sample", other_seed)).result().text != alone
    for g in others:
        g.result()


def test_back_pressure_and_limits(served3: Served3) -> None:
    import copy

    from tessera.services.inference.build import build_engine

    eng = build_engine(
        copy.deepcopy(served3.base),
        TOK,
        served3.store,
        served3.lookup,
        settings=engine_settings(inference_queue_size=2, inference_max_batch=1),
    )
    eng.start()
    try:
        with pytest.raises(InvalidRequestError, match="max_tokens 65 exceeds"):
            eng.submit(GenerateRequest("t1", "ann", "x", SamplingParams(max_tokens=65)))
        gens, rejected = [], 0
        for _ in range(8):
            try:
                gens.append(
                    eng.submit(GenerateRequest("t1", "ann", "x", SamplingParams(max_tokens=64)))
                )
            except QueueFullError as exc:
                assert "queue is full" in str(exc)
                rejected += 1
        assert rejected >= 4  # one running, two waiting at most
        for g in gens:
            g.result()
        slow = eng.submit(
            GenerateRequest("t1", "ann", "x", SamplingParams(max_tokens=64), timeout_s=0.05)
        )
        with pytest.raises(RequestTimeoutError):
            slow.result()
        # the engine is still healthy after a timeout
        assert (
            eng.submit(GenerateRequest("t1", "bob", "x", SamplingParams(max_tokens=3)))
            .result()
            .completion_tokens
            == 3
        )
    finally:
        eng.stop()


def test_missing_adapter_fails_only_its_request(engine: InferenceEngine, served3: Served3) -> None:
    from tessera.services.inference.revisions import Served

    served3.table[("t1", "eve")] = Served("rev-eve-1", "f" * 64, "personal")
    bad = engine.submit(GenerateRequest("t1", "eve", "x", SamplingParams(max_tokens=3)))
    good = engine.submit(GenerateRequest("t1", "ann", "x", SamplingParams(max_tokens=3)))
    with pytest.raises(InvalidRequestError, match="cannot be served"):
        bad.result()
    assert good.result().completion_tokens == 3
