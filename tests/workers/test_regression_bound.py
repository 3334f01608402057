"""The regression bound on the tiny Llama: a step that raises the shared regression set's
NLL past the bound is pulled back toward its warm start, deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tessera.workers.adapter_store import load_adapter_blob, save_adapter_blob, sha256_file
from tessera.workers.dataset import Example
from tessera.workers.evaluator import MetricsCache, regression_nll
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.regression_bound import (
    SHRINK_FACTORS,
    Bounded,
    bound_record,
    bound_regression,
    bounded_blob,
    interpolate,
)
from tessera.workers.regression_set import RegressionSet, load_regression_set
from tessera.workers.trainer import train_adapter

BASE = "0" * 64
PRIOR = LoraTrainConfig(rank=4, alpha=8, lr=5e-3, epochs=2, batch_size=4, max_length=64,
                        dropout=0.0)


def _examples(reply: str, n: int = 12) -> list[Example]:
    return [Example((("user", f"Tell me about day {i}."),), f"{reply} {i}", i + 1, "exchange")
            for i in range(n)]


@pytest.fixture(scope="module")
def prior(tiny: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, tokenizer = tiny
    return train_adapter(model, tokenizer, _examples("It was a fine day, thanks."),
                         config=PRIOR, base_digest=BASE,
                         out_dir=tmp_path_factory.mktemp("prior"), seed=1).blob_path


def _step(prior: Path, folder: Path, scale: float, seed: int) -> Path:
    """A step from `prior` drawn at random: the tiny random model's regression NLL barely
    moves when it is trained, so the steps that move it are drawn (seeds chosen so that
    the rise shrinks with the step, and so that it does not)."""
    state, cfg = load_adapter_blob(prior)
    noise = torch.Generator().manual_seed(seed)
    stepped = {k: v + scale * torch.randn(v.shape, generator=noise) for k, v in state.items()}
    path = folder / f"step-{scale:g}-{seed}.safetensors"
    save_adapter_blob(stepped, cfg, path)
    return path


def _drawn(tiny: tuple[Any, Any], prior: Path, folder: Path, scale: float, seed: int
           ) -> tuple[Any, Any, Path, RegressionSet]:
    """(model, tokenizer, a drawn step from `prior`, the regression set)."""
    model, tokenizer = tiny
    return model, tokenizer, _step(prior, folder, scale, seed), load_regression_set(
        "regression-v1")


def _rise(tiny: tuple[Any, Any], blob: Path | None, start: Path, regression: RegressionSet
          ) -> float:
    model, tokenizer = tiny
    nll = regression_nll(model, tokenizer, adapter=blob, regression=regression, max_length=64)
    return nll / regression_nll(model, tokenizer, adapter=start, regression=regression,
                                max_length=64) - 1


def _bound(tiny: tuple[Any, Any], personal: Path, prior: Path, regression: RegressionSet,
           max_rise: float, stretch: float = 1.0) -> Bounded:
    model, tokenizer = tiny
    return bound_regression(model, tokenizer, personal, prior, regression=regression,
                            max_rise=max_rise, max_length=64, stretch=stretch)


def test_interpolation_keeps_the_endpoints_and_scales_b_without_a_start() -> None:
    torch.manual_seed(0)
    start = {"x.lora_A.weight": torch.randn(2, 3), "x.lora_B.weight": torch.randn(3, 2)}
    trained = {k: v + torch.randn_like(v) for k, v in start.items()}
    for k in start:
        torch.testing.assert_close(interpolate(start, trained, 0.0)[k], start[k])
        torch.testing.assert_close(interpolate(start, trained, 1.0)[k], trained[k])
        torch.testing.assert_close(interpolate(start, trained, 0.5)[k], (start[k] + trained[k]) / 2)
        # a factor above 1 stretches the step past the trained weights (issue #14's style step)
        torch.testing.assert_close(interpolate(start, trained, 2.0)[k],
                                   2 * trained[k] - start[k])
    fresh = interpolate(None, trained, 0.25)
    torch.testing.assert_close(fresh["x.lora_A.weight"], trained["x.lora_A.weight"])
    torch.testing.assert_close(fresh["x.lora_B.weight"], 0.25 * trained["x.lora_B.weight"])
    with pytest.raises(ValueError, match="differ in layers"):
        interpolate({"y.lora_A.weight": torch.zeros(2, 3)}, trained, 0.5)


def test_a_step_past_the_bound_is_pulled_back_until_within_it(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    model, tokenizer, personal, regression = _drawn(tiny, prior, tmp_path, 0.2, 5)
    trained_rise = _rise(tiny, personal, prior, regression)
    assert trained_rise > 0.001, "the drawn step should raise the regression set's NLL"
    bound = trained_rise / 3
    got = bound_regression(model, tokenizer, personal, prior, regression=regression,
                           max_rise=bound, max_length=64, cache=MetricsCache())
    assert got.factor in SHRINK_FACTORS and got.blob != personal
    assert got.trained_rise == pytest.approx(trained_rise)
    assert got.rise == pytest.approx(_rise(tiny, got.blob, prior, regression))
    assert got.rise <= bound
    # the first factor within the bound: every larger one was not
    for factor in (f for f in SHRINK_FACTORS if f > got.factor):
        earlier = personal.with_name(f"{personal.stem}-x{factor:g}{personal.suffix}")
        assert _rise(tiny, earlier, prior, regression) > bound
    state, cfg = load_adapter_blob(got.blob)
    assert (cfg.r, cfg.lora_alpha) == (4, 8.0)
    assert set(state) == set(load_adapter_blob(personal)[0])
    # the same inputs choose the same bytes (a revision re-trained gets its digest back)
    again = bound_regression(model, tokenizer, personal, prior, regression=regression,
                             max_rise=bound, max_length=64)
    assert (again.factor, sha256_file(again.blob)) == (got.factor, sha256_file(got.blob))


def test_when_no_smaller_step_is_within_the_bound_the_least_rise_is_kept(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    # a step whose smaller shares rise more than it does
    model, tokenizer, personal, regression = _drawn(tiny, prior, tmp_path, 0.5, 3)
    trained_rise = _rise(tiny, personal, prior, regression)
    got = bound_regression(model, tokenizer, personal, prior, regression=regression,
                           max_rise=trained_rise / 3, max_length=64)
    rises = {f: _rise(tiny, personal.with_name(f"{personal.stem}-x{f:g}{personal.suffix}"),
                      prior, regression) for f in SHRINK_FACTORS}
    assert min(rises.values()) > trained_rise / 3  # none within the bound
    assert got.rise == pytest.approx(min([trained_rise, *rises.values()]))
    assert got.factor == min([1.0, *rises], key=lambda f: rises.get(f, trained_rise))


def test_a_step_within_the_bound_and_a_bound_that_is_off_keep_the_adapter(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    model, tokenizer, personal, regression = _drawn(tiny, prior, tmp_path, 0.2, 5)
    loose = bound_regression(model, tokenizer, personal, prior, regression=regression,
                             max_rise=1.0, max_length=64)
    assert (loose.blob, loose.factor) == (personal, 1.0)
    assert bounded_blob(model, tokenizer, personal, prior, max_rise=None,
                        regression=regression, max_length=64) == personal


def test_on_a_rebase_the_bound_holds_against_the_head_as_well(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    # warm start: a new prior that regresses more than the user's head (here `prior`)
    model, tokenizer, new_prior, regression = _drawn(tiny, prior, tmp_path, 0.2, 5)
    candidate = _step(new_prior, tmp_path, 0.02, 7)
    over_start = _rise(tiny, candidate, new_prior, regression)
    over_head = _rise(tiny, candidate, prior, regression)
    assert over_start < over_head  # the head is the stricter reference
    bound = (over_start + over_head) / 2

    alone = bound_regression(model, tokenizer, candidate, new_prior, regression=regression,
                             max_rise=bound, max_length=64)
    assert (alone.blob, alone.factor) == (candidate, 1.0)  # within the bound of its start
    rebased = bound_regression(model, tokenizer, candidate, new_prior, regression=regression,
                               max_rise=bound, max_length=64, also_within=prior)
    assert rebased.trained_rise == pytest.approx(over_head)
    assert rebased.rise == pytest.approx(_rise(tiny, rebased.blob, prior, regression))
    assert rebased.factor < 1.0 or rebased.rise > bound  # pulled back, or the gate decides

    kept = bounded_blob(model, tokenizer, candidate, new_prior, max_rise=bound,
                        regression=regression, max_length=64, also_within=("a" * 64, prior))
    assert bound_record(kept) == {"max_rise": bound, "also_within": "a" * 64,
                                  **rebased.as_provenance()}


def test_a_stretched_step_within_the_bound_is_kept_and_recorded(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    model, tokenizer, personal, regression = _drawn(tiny, prior, tmp_path, 0.2, 5)
    got = _bound(tiny, personal, prior, regression, 1.0, stretch=2.0)
    assert got.factor == 2.0 and got.blob != personal
    assert got.rise == pytest.approx(_rise(tiny, got.blob, prior, regression))
    start, trained = load_adapter_blob(prior)[0], load_adapter_blob(personal)[0]
    stretched = load_adapter_blob(got.blob)[0]
    for key, w in trained.items():
        torch.testing.assert_close(stretched[key], start[key] + 2 * (w - start[key]))

    kept = bounded_blob(model, tokenizer, personal, prior, max_rise=1.0,
                        regression=regression, max_length=64, stretch=2.0)
    assert sha256_file(kept) == sha256_file(got.blob)  # deterministic: same bytes again
    assert bound_record(kept) == {"max_rise": 1.0, "stretch": 2.0, **got.as_provenance()}


def test_a_stretched_step_past_the_bound_falls_back_to_the_step_as_trained(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    # a draw whose rise grows with the step (on the tiny random model not all do)
    personal, regression = _drawn(tiny, prior, tmp_path, 0.2, 8)[2:]
    trained_rise = _rise(tiny, personal, prior, regression)
    stretched = _bound(tiny, personal, prior, regression, 1.0, stretch=2.0)
    assert stretched.rise > trained_rise > 0, "stretching the drawn step should rise more"
    got = _bound(tiny, personal, prior, regression, (trained_rise + stretched.rise) / 2,
                 stretch=2.0)
    assert (got.blob, got.factor) == (personal, 1.0)
    # a bound the trained step breaks too: on to the shorter steps, as without a stretch
    personal, regression = _drawn(tiny, prior, tmp_path, 0.2, 5)[2:]
    bound = _rise(tiny, personal, prior, regression) / 3
    shorter = _bound(tiny, personal, prior, regression, bound, stretch=2.0)
    assert shorter.factor in SHRINK_FACTORS and shorter.rise <= bound


def test_a_stretch_needs_a_bound_to_fall_back_within(
    tiny: tuple[Any, Any], prior: Path, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="needs max_regression_rise"):
        LoraTrainConfig(step_stretch=2.0)
    assert LoraTrainConfig(step_stretch=2.0, max_regression_rise=0.015).step_stretch == 2.0
    with pytest.raises(ValueError):
        LoraTrainConfig(step_stretch=0.5, max_regression_rise=0.015)
    model, tokenizer, personal, regression = _drawn(tiny, prior, tmp_path, 0.2, 5)
    with pytest.raises(ValueError, match="needs a regression bound"):
        bounded_blob(model, tokenizer, personal, prior, max_rise=None,
                     regression=regression, max_length=64, stretch=2.0)
