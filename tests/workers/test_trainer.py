"""LoRA training on the tiny Llama: determinism, warm start, a clean shared base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.workers.adapter_store import load_adapter_blob, sha256_file
from tessera.workers.dataset import Example
from tessera.workers.evaluator import mean_target_nll
from tessera.workers.lora_attach import AdapterMismatch
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.trainer import EmptyDataset, train_adapter

BASE = "0" * 64
CONFIG = LoraTrainConfig(rank=4, alpha=8, lr=5e-3, epochs=2, batch_size=4, max_length=64)


def _examples(n: int = 10, salt: str = "") -> list[Example]:
    return [
        Example((("user", f"What did you do on day {i}?{salt}"),),
                f"I went to the beach and ate pizza {i}.", i + 1, "exchange")
        for i in range(n)
    ]


def _train(tiny: tuple[Any, Any], tmp: Path, name: str, **kw: Any) -> Any:
    model, tokenizer = tiny
    kw.setdefault("config", CONFIG)
    examples = kw.pop("examples", _examples())
    return train_adapter(model, tokenizer, examples, base_digest=BASE, out_dir=tmp / name, **kw)


def test_same_inputs_and_seed_give_the_same_digest(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    a = _train(tiny, tmp_path, "a", seed=3)
    b = _train(tiny, tmp_path, "b", seed=3)
    assert sha256_file(a.blob_path) == sha256_file(b.blob_path)
    assert a.steps == b.steps == 6  # ceil(10 / 4) * 2 epochs
    c = _train(tiny, tmp_path, "c", seed=4)
    assert sha256_file(c.blob_path) != sha256_file(a.blob_path)
    d = _train(tiny, tmp_path, "d", seed=3, examples=_examples(salt="!"))
    assert sha256_file(d.blob_path) != sha256_file(a.blob_path)


def test_blob_records_config_and_training_reduces_loss(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = tiny
    result = _train(tiny, tmp_path, "a", config=CONFIG.model_copy(update={"epochs": 6, "lr": 2e-2}))
    state, cfg = load_adapter_blob(result.blob_path)
    assert (cfg.r, cfg.lora_alpha, cfg.target_modules, cfg.base_digest) == (
        4, 8.0, ("q_proj", "v_proj"), BASE)
    assert len(state) == 2 * 2 * 2  # 2 layers x {q,v} x {A,B}
    key = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
    assert state[key].shape == (4, model.config.hidden_size)
    examples = _examples()
    before = mean_target_nll(model, tokenizer, examples, adapter=None)
    after = mean_target_nll(model, tokenizer, examples, adapter=result.blob_path)
    assert after < before - 0.3, (before, after)  # nats per target token


def test_base_model_is_left_untouched(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _train(tiny, tmp_path, "a")
    after = model.state_dict()
    assert set(after) == set(before)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


def test_warm_start_changes_the_result_and_starts_from_the_parent(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    model, tokenizer = tiny
    parent = _train(tiny, tmp_path, "parent", config=CONFIG.model_copy(update={"epochs": 4}))
    cold = _train(tiny, tmp_path, "cold", examples=_examples(salt="?"))
    warm = _train(tiny, tmp_path, "warm", examples=_examples(salt="?"),
                  init_adapter=parent.blob_path)
    assert sha256_file(warm.blob_path) != sha256_file(cold.blob_path)
    # One step of lr 1e-9 from the parent stays (numerically) at the parent.
    tiny_step = CONFIG.model_copy(update={"lr": 1e-9, "max_steps": 1})
    still = _train(tiny, tmp_path, "still", config=tiny_step, init_adapter=parent.blob_path)
    parent_state, _ = load_adapter_blob(parent.blob_path)
    for key, tensor in parent_state.items():
        torch.testing.assert_close(still.state_dict[key], tensor, atol=1e-6, rtol=0)
    assert still.steps == 1
    assert mean_target_nll(model, tokenizer, _examples(), adapter=still.blob_path) == \
        pytest.approx(mean_target_nll(model, tokenizer, _examples(), adapter=parent.blob_path),
                      rel=1e-5)


def _distance(state: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]) -> float:
    return float(sum((state[k] - anchor[k]).pow(2).sum() for k in anchor))


def test_proximal_term_keeps_a_warm_started_adapter_near_its_parent(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    parent = _train(tiny, tmp_path, "parent", config=CONFIG.model_copy(update={"epochs": 4}))
    parent_state, _ = load_adapter_blob(parent.blob_path)
    other = _examples(salt=" Tell me more.")
    free_cfg = CONFIG.model_copy(update={"epochs": 4, "lr": 2e-2})
    free = _train(tiny, tmp_path, "free", config=free_cfg, examples=other,
                  init_adapter=parent.blob_path)
    pulled = _train(tiny, tmp_path, "pulled", examples=other, init_adapter=parent.blob_path,
                    config=free_cfg.model_copy(update={"prox_weight": 10.0}))
    # Same data, order and seed: only the pull differs, and it shrinks the step away.
    assert _distance(pulled.state_dict, parent_state) < 0.5 * _distance(free.state_dict,
                                                                         parent_state)
    # No warm start: nothing to stay near, the term is off (same digest as without it).
    cold = _train(tiny, tmp_path, "cold", config=free_cfg.model_copy(update={"prox_weight": 10.0}))
    cold_free = _train(tiny, tmp_path, "cold_free", config=free_cfg)
    assert sha256_file(cold.blob_path) == sha256_file(cold_free.blob_path)


def test_warm_start_must_match_rank_targets_and_base(
    tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    parent = _train(tiny, tmp_path, "parent", config=CONFIG.model_copy(update={"max_steps": 1}))
    with pytest.raises(AdapterMismatch, match="rank 4"):
        _train(tiny, tmp_path, "r8", config=CONFIG.model_copy(update={"rank": 8}),
               init_adapter=parent.blob_path)
    model, tokenizer = tiny
    with pytest.raises(AdapterMismatch, match="trained on base"):
        train_adapter(model, tokenizer, _examples(), config=CONFIG, base_digest="f" * 64,
                      init_adapter=parent.blob_path, out_dir=tmp_path / "other-base")


def test_empty_dataset_is_refused(tiny: tuple[Any, Any], tmp_path: Path) -> None:
    with pytest.raises(EmptyDataset):
        _train(tiny, tmp_path, "empty", examples=[])


def test_config_is_validated_and_canonical() -> None:
    cfg = LoraTrainConfig(target_modules="v_proj, q_proj,q_proj")
    assert cfg.target_modules == ("q_proj", "v_proj")
    assert cfg.as_provenance()["target_modules"] == ["q_proj", "v_proj"]
    for bad in ({"rank": 0}, {"lr": 0}, {"dropout": 1.0}, {"target_modules": ()},
                {"target_modules": ("q proj",)}, {"rank": 1, "alpha": 100}, {"extra": 1}):
        with pytest.raises(ValueError):
            LoraTrainConfig(**bad)
    assert "LoRA rank" in (LoraTrainConfig.model_fields["rank"].description or "")
