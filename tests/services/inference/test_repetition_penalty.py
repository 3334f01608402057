"""The repetition penalty (issue #14): Hugging Face's semantics token for token, only on
the rows that ask for it, and the server's default for requests that give none."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from tessera.services.inference.build import build_engine
from tessera.services.inference.engine import EngineConfig, InferenceEngine
from tessera.services.inference.requests import GenerateRequest, Generation
from tessera.services.inference.sampling import (
    SamplingParams,
    apply_repetition_penalty,
    token_history,
)

from .conftest import Served3, engine_settings
from .helpers import byte_tokenizer

TOK = byte_tokenizer()
N = 24  # new tokens: long enough for the tiny random model to start repeating itself


def hf_greedy(model: nn.Module, prompt: str, n: int, penalty: float) -> tuple[str, int]:
    """Reference: transformers' own greedy generate with `repetition_penalty`; its text
    (bytes round-trip exactly) and how many tokens it generated, the end one included."""
    ids = torch.tensor([TOK.encode(prompt)])
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]  # causal LMs have generate()
            input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
            do_sample=False, repetition_penalty=penalty, eos_token_id=TOK.eos_token_id,
            pad_token_id=TOK.eos_token_id,
        )
    new = [int(t) for t in out[0, ids.shape[1]:]]
    if TOK.eos_token_id in new:
        new = new[: new.index(TOK.eos_token_id) + 1]
    return TOK.decode([t for t in new if t != TOK.eos_token_id]), len(new)


def answer(gen: Generation) -> tuple[str, int]:
    """The engine's answer as `hf_greedy` gives it. Token ids are compared through the
    text: a byte that is half a UTF-8 character is streamed with a later token."""
    result = gen.result()
    return result.text, result.completion_tokens


def submit(engine: InferenceEngine, user: str, prompt: str, penalty: float | None) -> Generation:
    params = SamplingParams(max_tokens=N, repetition_penalty=penalty)
    return engine.submit(GenerateRequest("t1", user, prompt, params))


@pytest.mark.parametrize("penalty", [1.3, 2.0])
def test_greedy_with_a_penalty_is_transformers_generate(
    engine: InferenceEngine, served3: Served3, penalty: float
) -> None:
    for user, model in (("dan", served3.base), ("ann", served3.peft["ann"])):
        prompt = "the the the cat"
        expected = hf_greedy(model, prompt, N, penalty)
        assert answer(submit(engine, user, prompt, penalty)) == expected, user
        # the penalty matters on this prompt: without it the reply differs
        assert hf_greedy(model, prompt, N, 1.0) != expected, user


def test_a_penalty_in_a_mixed_batch_leaves_the_other_rows_alone(
    engine: InferenceEngine, served3: Served3
) -> None:
    alone = answer(submit(engine, "bob", "once upon a time", None))
    assert alone == hf_greedy(served3.peft["bob"], "once upon a time", N, 1.0)
    steps = engine.steps
    # submitted back to back: prefilled together and decoded in the same steps
    plain = submit(engine, "bob", "once upon a time", None)
    penalised = submit(engine, "cyd", "once upon a time", 1.5)
    explicit_off = submit(engine, "ann", "once upon a time", 1.0)
    assert answer(plain) == alone
    with_penalty = answer(penalised)
    assert with_penalty == hf_greedy(served3.peft["cyd"], "once upon a time", N, 1.5)
    assert answer(explicit_off) == hf_greedy(served3.peft["ann"], "once upon a time", N, 1.0)
    assert engine.steps - steps <= N + 3  # shared decode steps (a prefill each at most)
    # each row's penalty matters here, so one leaking into another row would show
    assert hf_greedy(served3.peft["bob"], "once upon a time", N, 1.5) != alone
    assert hf_greedy(served3.peft["cyd"], "once upon a time", N, 1.0) != with_penalty


def test_the_servers_default_applies_when_a_request_gives_none(served3: Served3) -> None:
    settings = engine_settings(serve_repetition_penalty=1.5)
    eng = build_engine(
        copy.deepcopy(served3.base), TOK, served3.store, served3.lookup, settings=settings
    ).start()
    try:
        assert eng.config.repetition_penalty == 1.5
        prompt = "the the the cat"
        assert answer(submit(eng, "dan", prompt, None)) == hf_greedy(
            served3.base, prompt, N, 1.5
        )
        # a request's own value wins, 1.0 (off) included
        assert answer(submit(eng, "dan", prompt, 1.0)) == hf_greedy(
            served3.base, prompt, N, 1.0
        )
    finally:
        eng.stop()


def test_apply_matches_the_logits_processor_and_skips_other_rows() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 50) * 5
    before = logits.clone()
    prompts = [[3, 7, 7, 49], [0, 1], [5, 5, 5, 9, 12, 3], [2]]
    histories = [token_history(p, 3) for p in prompts]
    histories[0][4] = 11  # a generated token: position len(prompt) + 0
    penalties = [1.3, 1.0, 2.0, 1.7]
    apply_repetition_penalty(logits, [histories[0], None, histories[2], None], penalties)
    assert torch.equal(logits[1], before[1]) and torch.equal(logits[3], before[3])
    for row, seen in ((0, [3, 7, 7, 49, 11]), (2, prompts[2])):
        processor = RepetitionPenaltyLogitsProcessor(penalties[row])
        expected = processor(torch.tensor([seen]), before[row : row + 1].clone())
        torch.testing.assert_close(logits[row], expected[0], rtol=0, atol=0)
    assert apply_repetition_penalty(logits, [None, None, None, None], penalties) is logits
    # a non-contiguous view (a column-major copy) gets the same values back
    strided = before.t().contiguous().t()
    out = apply_repetition_penalty(strided, [histories[0], None, histories[2], None], penalties)
    assert torch.equal(out, logits)


@pytest.mark.parametrize("bad", [0.0, 0.5, 0.999, 2.001, 10.0, -1.0, math.nan, math.inf])
def test_invalid_penalties_are_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="repetition_penalty must be within"):
        SamplingParams(repetition_penalty=bad)
    with pytest.raises(ValueError, match="repetition_penalty must be within"):
        EngineConfig(repetition_penalty=bad)
    with pytest.raises(ValidationError, match="serve_repetition_penalty"):
        engine_settings(serve_repetition_penalty=bad)
    for good in (1.0, 1.15, 2.0):
        assert SamplingParams(repetition_penalty=good).repetition_penalty == good
