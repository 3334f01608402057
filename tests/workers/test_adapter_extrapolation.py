"""Adapter extrapolation: the combined LoRA's weight change is exactly
(1 + s) * delta_personal - s * delta_prior, it loads like any adapter, s = 0 answers as
the personal adapter, and mismatched adapters are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from tessera.workers.adapter_extrapolation import IncompatibleAdapters, extrapolate
from tessera.workers.adapter_store import AdapterBlobConfig
from tessera.workers.lora_attach import lora_attached

TARGETS = ("q_proj", "v_proj")
BASE = "b" * 64


def _random_adapter(model: Any, seed: int, rank: int, alpha: float) -> dict[str, torch.Tensor]:
    """A rank-`rank` adapter with non-zero A and B (a trained one, not peft's B = 0)."""
    gen = torch.Generator().manual_seed(seed)
    with lora_attached(model, rank=rank, alpha=alpha, target_modules=TARGETS) as peft_model:
        from peft import get_peft_model_state_dict

        shapes = {k: v.shape for k, v in get_peft_model_state_dict(peft_model).items()}
    return {k: torch.randn(s, generator=gen) * 0.05 for k, s in shapes.items()}


def _delta(state: dict[str, torch.Tensor], prefix: str, scaling: float) -> torch.Tensor:
    return scaling * state[f"{prefix}.lora_B.weight"] @ state[f"{prefix}.lora_A.weight"]


def _logits(model: Any, state: dict[str, torch.Tensor], cfg: AdapterBlobConfig) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with lora_attached(model, rank=cfg.r, alpha=cfg.lora_alpha,
                       target_modules=cfg.target_modules, state_dict=state) as peft_model:
        peft_model.eval()
        with torch.no_grad():
            return peft_model(input_ids=ids).logits.clone()  # type: ignore[no-any-return]


@pytest.fixture()
def two(tiny: tuple[Any, Any]) -> tuple[Any, tuple[Any, AdapterBlobConfig],
                                         tuple[Any, AdapterBlobConfig]]:
    model, _ = tiny
    personal_cfg = AdapterBlobConfig(4, 8.0, TARGETS, BASE)  # scaling 2
    prior_cfg = AdapterBlobConfig(2, 1.0, TARGETS, BASE)  # scaling 0.5
    personal = (_random_adapter(model, 1, 4, 8.0), personal_cfg)
    prior = (_random_adapter(model, 2, 2, 1.0), prior_cfg)
    return model, personal, prior


@pytest.mark.parametrize("strength", [0.0, 0.5, 2.0])
def test_the_combined_weight_change_is_the_extrapolation(two: Any, strength: float) -> None:
    _, (p, p_cfg), (q, q_cfg) = two
    state, cfg = extrapolate((p, p_cfg), (q, q_cfg), strength)
    assert (cfg.r, cfg.lora_alpha, cfg.base_digest) == (6, 6.0, BASE)
    assert set(state) == set(p)
    prefixes = [k.removesuffix(".lora_A.weight") for k in p if k.endswith(".lora_A.weight")]
    assert prefixes
    for prefix in prefixes:
        want = ((1 + strength) * _delta(p, prefix, p_cfg.scaling)
                - strength * _delta(q, prefix, q_cfg.scaling))
        got = _delta(state, prefix, cfg.scaling)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_it_serves_as_an_ordinary_adapter(two: Any) -> None:
    model, personal, prior = two
    at_zero = _logits(model, *extrapolate(personal, prior, 0.0))
    torch.testing.assert_close(at_zero, _logits(model, *personal), rtol=1e-4, atol=1e-5)
    # s = 1: the same answers as the base with 2 * delta_personal - delta_prior merged in
    state, cfg = extrapolate(personal, prior, 1.0)
    merged = copy.deepcopy(model)
    (p, p_cfg), (q, q_cfg) = personal, prior
    for key in p:
        if not key.endswith(".lora_A.weight"):
            continue
        prefix = key.removesuffix(".lora_A.weight")
        module = merged.get_submodule(prefix.removeprefix("base_model.model."))
        with torch.no_grad():
            module.weight += (2 * _delta(p, prefix, p_cfg.scaling)
                              - _delta(q, prefix, q_cfg.scaling))
    with torch.no_grad():
        want = merged(input_ids=torch.tensor([[1, 5, 9, 13, 17, 21]])).logits
    torch.testing.assert_close(_logits(model, state, cfg), want, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(want, at_zero, atol=1e-3)  # s moved the answers


def test_mismatched_adapters_and_bad_strengths_are_refused(two: Any) -> None:
    _, (p, p_cfg), (q, q_cfg) = two
    other_base = AdapterBlobConfig(q_cfg.r, q_cfg.lora_alpha, TARGETS, "c" * 64)
    with pytest.raises(IncompatibleAdapters, match="different base models"):
        extrapolate((p, p_cfg), (q, other_base), 1.0)
    fewer = {k: v for k, v in q.items() if "v_proj" not in k}
    with pytest.raises(IncompatibleAdapters, match="different layers"):
        extrapolate((p, p_cfg), (fewer, q_cfg), 1.0)
    for bad in (-0.5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="strength"):
            extrapolate((p, p_cfg), (q, q_cfg), bad)
