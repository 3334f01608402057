"""The shared-prefix NLL: same figure as whole rows, only the prefix is run once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.workers.adapter_store import load_adapter_blob
from tessera.workers.dataset import IGNORE_INDEX, EncodedExample, Example, collate, encode_example
from tessera.workers.evaluator import mean_target_nll
from tessera.workers.lora_attach import lora_attached
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.prefix_nll import MIN_PREFIX, shared_prefix_length
from tessera.workers.target_loss import target_nll
from tessera.workers.trainer import train_adapter

X = IGNORE_INDEX  # a prompt token: no loss
EXAMPLES = [
    Example((("user", "Hi"),), "Hello there.", 1, "exchange"),
    Example((("user", "What is the capital of France?"),), "Paris.", 2, "exchange"),
    Example((("assistant", "earlier"), ("user", "And then?")), "We went to the beach.", 3,
            "text"),
]


def _whole_rows(model: torch.nn.Module, encoded: list[EncodedExample], pad_id: int) -> float:
    with torch.inference_mode():
        nll, n = target_nll(model, collate(encoded, pad_id=pad_id))
    return float(nll) / n


def test_prefix_stops_at_the_first_difference_and_before_any_target() -> None:
    a = EncodedExample((1, 2, 3, 4, 5), (X, X, X, 4, 5))
    b = EncodedExample((1, 2, 3, 9, 9, 9), (X, X, X, X, 9, 9))
    assert shared_prefix_length([a, b]) == 2  # a's first target (index 3) is predicted at 2
    c = EncodedExample((1, 2, 7, 7, 7), (X, X, X, X, 7))
    assert shared_prefix_length([b, c]) == 2  # they differ at index 2
    assert shared_prefix_length([c]) == 3  # alone: up to the position predicting its target
    assert shared_prefix_length([EncodedExample((1, 2), (X, X))] * 2) == 1  # one token left
    assert shared_prefix_length([]) == 0


def test_the_chat_template_gives_a_long_shared_prefix(tiny: tuple[Any, Any]) -> None:
    _, tokenizer = tiny
    encoded = [encode_example(tokenizer, e, max_length=64) for e in EXAMPLES]
    assert shared_prefix_length(encoded) >= MIN_PREFIX


def test_same_nll_as_whole_rows_for_base_and_adapter(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = tiny
    encoded = [encode_example(tokenizer, e, max_length=64) for e in EXAMPLES]
    pad_id = tokenizer.pad_token_id
    assert mean_target_nll(model, tokenizer, EXAMPLES, adapter=None, max_length=64) == \
        pytest.approx(_whole_rows(model, encoded, pad_id), rel=1e-5)

    result = train_adapter(model, tokenizer, EXAMPLES, base_digest="0" * 64,
                           config=LoraTrainConfig(rank=2, alpha=4, max_steps=2, lr=5e-2,
                                                  max_length=64),
                           out_dir=tmp_path / "a")
    state, cfg = load_adapter_blob(result.blob_path)
    with lora_attached(model, rank=cfg.r, alpha=cfg.lora_alpha,
                       target_modules=cfg.target_modules, state_dict=state) as peft_model:
        peft_model.eval()
        reference = _whole_rows(peft_model, encoded, pad_id)
    measured = mean_target_nll(model, tokenizer, EXAMPLES, adapter=result.blob_path,
                               max_length=64)
    assert measured == pytest.approx(reference, rel=1e-5)
    # and the adapter did change the figure, so the comparison above means something
    assert abs(reference - _whole_rows(model, encoded, pad_id)) > 1e-4
