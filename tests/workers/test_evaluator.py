"""Evaluator figures on the tiny Llama: NLL, adapters, canaries, norms, the regression set."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.workers.adapter_store import AdapterBlobConfig, load_adapter_blob, save_adapter_blob
from tessera.workers.dataset import Example
from tessera.workers.evaluator import (
    MetricsCache,
    adapter_norm,
    degenerate_reason,
    evaluate,
    mean_target_nll,
)
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.regression_set import load_regression_set
from tessera.workers.trainer import train_adapter

EXAMPLES = [Example((("user", f"Question {i}?"),), f"Answer number {i}.", i, "exchange")
            for i in range(5)]


def test_base_nll_is_the_mean_over_target_tokens(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    nll = mean_target_nll(model, tokenizer, EXAMPLES, adapter=None, batch_size=2)
    # batching and padding must not change the figure
    assert nll == pytest.approx(mean_target_nll(model, tokenizer, EXAMPLES, adapter=None,
                                                batch_size=5), rel=1e-5)
    # a random model over a 512-token vocabulary is close to uniform: about ln(512) nats
    assert abs(nll - math.log(len(tokenizer))) < 1.0
    assert math.isnan(mean_target_nll(model, tokenizer, [], adapter=None))


def test_adapter_with_zero_update_equals_the_base(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, tokenizer = tiny
    result = train_adapter(model, tokenizer, EXAMPLES, base_digest="0" * 64,
                           config=LoraTrainConfig(rank=2, alpha=4, max_steps=1),
                           out_dir=tmp_path / "a")
    state, cfg = load_adapter_blob(result.blob_path)
    zero_b = {k: (torch.zeros_like(v) if ".lora_B." in k else v) for k, v in state.items()}
    save_adapter_blob(zero_b, cfg, tmp_path / "zero.safetensors")
    base = mean_target_nll(model, tokenizer, EXAMPLES, adapter=None)
    assert mean_target_nll(model, tokenizer, EXAMPLES, adapter=tmp_path / "zero.safetensors") \
        == pytest.approx(base, rel=1e-6)
    assert adapter_norm(zero_b, cfg) == 0.0


def test_adapter_norm_is_the_largest_scaled_update() -> None:
    cfg = AdapterBlobConfig(r=1, lora_alpha=2.0, target_modules=("q_proj",), base_digest="")
    state = {
        "m.layers.0.q_proj.lora_A.weight": torch.tensor([[3.0, 0.0]]),
        "m.layers.0.q_proj.lora_B.weight": torch.tensor([[1.0], [0.0]]),
        "m.layers.1.q_proj.lora_A.weight": torch.tensor([[0.0, 4.0]]),
        "m.layers.1.q_proj.lora_B.weight": torch.tensor([[0.0], [1.0]]),
    }
    assert adapter_norm(state, cfg) == pytest.approx(8.0)  # 2 * ||B1 @ A1|| = 2 * 4


@pytest.mark.parametrize(("text", "bad"), [
    ("The capital of France is Paris.", False),
    ("I'm doing well, thank you! How about you?", False),
    ("", True),
    ("   \n\n", True),
    ("eeeeeeeeeeeeeeeeeeee", True),
    ("the the the the the the the", True),
    ("ok ok ok ok ok ok ok ok ok ok ok ok ok", True),
    ("a b a b a b a b a b a b a b a b a b", True),
])
def test_degenerate_outputs_are_named(text: str, bad: bool) -> None:
    assert (degenerate_reason(text) is not None) is bad


def test_evaluate_reports_all_figures_and_caches_the_baseline(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    regression = load_regression_set()
    cache = MetricsCache()
    metrics = evaluate(model, tokenizer, adapter=None, heldout=EXAMPLES, regression=regression,
                       cache=cache)
    assert metrics.heldout_examples == 5
    assert metrics.regression_version == "regression-v1"
    assert metrics.adapter_norm == 0.0
    assert len(metrics.canary_outputs) == len(regression.canary_prompts)
    assert metrics.user_nll == pytest.approx(
        mean_target_nll(model, tokenizer, EXAMPLES, adapter=None), rel=1e-6)
    again = evaluate(model, tokenizer, adapter=None, heldout=EXAMPLES, regression=regression,
                     cache=cache)
    assert again == metrics
    # The cache answers from content: poison its entries and the answer follows them.
    for key in cache._user:
        cache._user[key] = 42.0
    assert evaluate(model, tokenizer, adapter=None, heldout=EXAMPLES, regression=regression,
                    cache=cache).user_nll == 42.0
    # A different held-out set is measured afresh; the regression part stays cached.
    other = evaluate(model, tokenizer, adapter=None, heldout=EXAMPLES[:2],
                     regression=regression, cache=cache)
    assert other.user_nll != 42.0
    assert other.regression_nll == metrics.regression_nll


def test_regression_set_is_versioned_and_stable() -> None:
    reg = load_regression_set()
    assert reg.version == "regression-v1"
    assert len(reg.examples) >= 20
    # Pinned: editing v1 in place fails here. Add regression-v2 instead.
    assert reg.digest == "ef99dede07b2897cc7c7c56fda4a0d9a64a9b58d6d2dcd9b515e845e5e7d4e7b"
    assert reg.digest == load_regression_set.__wrapped__().digest  # recomputed: same
    with pytest.raises(KeyError, match="unknown regression set"):
        load_regression_set("nope")


def test_target_only_head_matches_the_models_own_loss(tiny: tuple[Any, Any]) -> None:
    from tessera.workers.dataset import collate, encode_example
    from tessera.workers.target_loss import target_nll

    model, tokenizer = tiny
    encoded = [encode_example(tokenizer, e, max_length=64) for e in EXAMPLES]
    batch = collate(encoded, pad_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        reference = model(**batch).loss  # full logits, mean over label tokens
        nll_sum, n_tokens = target_nll(model, batch)
    assert n_tokens == sum(e.n_target_tokens for e in encoded)
    assert float(nll_sum) / n_tokens == pytest.approx(float(reference), rel=1e-5)


def test_canaries_in_one_padded_call_answer_as_one_by_one(tiny: tuple[Any, Any]) -> None:
    from tessera.workers.evaluator import canary_generations

    model, tokenizer = tiny
    # Prompts of different lengths, so the batched call has to left-pad.
    prompts = ["Hi", "What is the capital of France?", "Tell me about the lazy dog, please."]
    together = canary_generations(model, tokenizer, prompts, adapter=None, max_new_tokens=8)
    alone = [canary_generations(model, tokenizer, [p], adapter=None, max_new_tokens=8)[0]
             for p in prompts]
    assert together == alone
    assert canary_generations(model, tokenizer, [], adapter=None) == []


def test_nll_batches_are_length_sorted_and_within_the_token_budget() -> None:
    from tessera.workers.dataset import IGNORE_INDEX, EncodedExample
    from tessera.workers.evaluator import _token_batches

    encoded = [EncodedExample((1,) * n, (IGNORE_INDEX,) * n) for n in (50, 10, 30, 20, 40)]
    batches = list(_token_batches(encoded, batch_size=3, max_batch_tokens=90))
    assert [[len(e.input_ids) for e in b] for b in batches] == [[10, 20, 30], [40], [50]]
    for b in batches:  # padded size = rows x widest row
        assert len(b) * max(len(e.input_ids) for e in b) <= 90 or len(b) == 1
    # One example wider than the budget still gets a batch of its own.
    assert [len(b) for b in _token_batches(encoded[:1], batch_size=8, max_batch_tokens=4)] == [1]
