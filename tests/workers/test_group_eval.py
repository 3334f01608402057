"""Batched evaluation: K adapters' figures in multi-LoRA passes equal the one-at-a-time ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tessera.workers.dataset import Example, encode_example
from tessera.workers.evaluator import MetricsCache, canary_generations, evaluate, mean_target_nll
from tessera.workers.group_eval import evaluate_group, group_canaries, group_mean_nll
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.prefix_nll import MIN_PREFIX, shared_prefix_length
from tessera.workers.regression_set import RegressionSet, load_regression_set
from tessera.workers.trainer import train_adapter

BASE = "0" * 64
# A high learning rate: the adapters must move the NLL far enough that a mix-up of slots
# (one user's rows measured under another's adapter) would show.
CONFIG = LoraTrainConfig(rank=4, alpha=8, lr=3e-2, epochs=3, batch_size=4, max_length=64,
                         dropout=0.0)


def _examples(n: int, salt: str, start: int = 0) -> list[Example]:
    return [Example((("user", f"Tell me about {salt} {i}" + "?" * (i % 3)),),
                    f"{salt} is lovely on day {i}." + " Really" * (i % 2), start + i + 1,
                    "exchange") for i in range(n)]


@pytest.fixture(scope="module")
def adapters(tiny: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    model, tokenizer = tiny
    tmp = tmp_path_factory.mktemp("group-eval")
    return [train_adapter(model, tokenizer, _examples(6, salt), config=CONFIG,
                          base_digest=BASE, seed=i, out_dir=tmp / salt).blob_path
            for i, salt in enumerate(("pizza", "hiking", "chess"))]


def test_group_mean_nll_equals_mean_target_nll_per_adapter(
    tiny: tuple[Any, Any], adapters: list[Path]
) -> None:
    model, tokenizer = tiny
    chosen: list[Path | None] = [adapters[0], None, adapters[1], adapters[2], adapters[0]]
    examples = [_examples(3, "pizza", 50), _examples(4, "hiking", 60),
                _examples(5, "hiking", 70), _examples(2, "chess", 80), []]
    for max_length, shares_prefix in ((64, True), (20, False)):
        encoded = [encode_example(tokenizer, e, max_length=max_length)
                   for ex in examples for e in ex]
        # both paths: the system turn run once per adapter, and rows cut before it
        assert (shared_prefix_length(encoded) >= MIN_PREFIX) == shares_prefix
        grouped = group_mean_nll(model, tokenizer, chosen, examples, max_length=max_length)
        alone = [mean_target_nll(model, tokenizer, ex, adapter=a, max_length=max_length)
                 for a, ex in zip(chosen, examples, strict=True)]
        assert grouped[:4] == pytest.approx(alone[:4], rel=1e-5)
        assert grouped[4] != grouped[4]  # NaN for no examples, as alone
    alone = [mean_target_nll(model, tokenizer, examples[0], adapter=chosen[0], max_length=64)]
    # the adapters differ enough that routing a row to the wrong slot would be caught
    swapped = group_mean_nll(model, tokenizer, [adapters[1]], [examples[0]], max_length=64)
    assert abs(swapped[0] - alone[0]) > 1e-3


def test_evaluate_group_matches_evaluate(
    tiny: tuple[Any, Any], adapters: list[Path]
) -> None:
    model, tokenizer = tiny
    full = load_regression_set()
    regression = RegressionSet(version=full.version, digest="subset-of-" + full.digest,
                               examples=full.examples[:6], canary_prompts=full.canary_prompts[:2])
    heldouts = [_examples(3, "pizza", 50), _examples(2, "hiking", 60)]
    baselines: list[Path | None] = [adapters[2], None]
    cache = MetricsCache()
    grouped = evaluate_group(model, tokenizer, candidates=adapters[:2], baselines=baselines,
                             heldouts=heldouts, regression=regression, max_length=64,
                             cache=cache)
    for i, (cand, base) in enumerate(grouped):
        c1 = evaluate(model, tokenizer, adapter=adapters[i], heldout=heldouts[i],
                      regression=regression, max_length=64)
        b1 = evaluate(model, tokenizer, adapter=baselines[i], heldout=heldouts[i],
                      regression=regression, max_length=64)
        for got, want in ((cand, c1), (base, b1)):
            assert got.user_nll == pytest.approx(want.user_nll, rel=1e-5)
            assert got.regression_nll == pytest.approx(want.regression_nll, rel=1e-5)
            assert got.adapter_norm == pytest.approx(want.adapter_norm, rel=1e-6)
            assert got.canary_outputs == want.canary_outputs
            assert got.canary_failures == want.canary_failures
            assert got.heldout_examples == want.heldout_examples


def test_group_canaries_equal_one_adapter_at_a_time(
    tiny: tuple[Any, Any], adapters: list[Path]
) -> None:
    model, tokenizer = tiny
    prompts = ["Hello, how are you?", "What is the capital of France?"]
    chosen: list[Path | None] = [adapters[0], None, adapters[2]]
    grouped = group_canaries(model, tokenizer, chosen, prompts, max_new_tokens=8)
    alone = [canary_generations(model, tokenizer, prompts, adapter=a, max_new_tokens=8)
             for a in chosen]
    assert grouped == alone
    assert grouped[0] != grouped[1]  # the adapter changes the answers: slots matter
