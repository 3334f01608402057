"""The gate's pure decision, one check at a time."""

from __future__ import annotations

import math

import pytest

from tessera.workers.gate import EvalMetrics, GateConfig, decide

CFG = GateConfig(min_gain=0.02, max_regression=0.01, max_adapter_norm=5.0)
BASE = EvalMetrics(user_nll=3.0, regression_nll=2.0, heldout_examples=8,
                   regression_version="regression-v1")


def _cand(**kw: object) -> EvalMetrics:
    fields: dict[str, object] = {"user_nll": 2.85, "regression_nll": 2.01, "adapter_norm": 1.0,
                                 "heldout_examples": 8, "regression_version": "regression-v1"}
    fields.update(kw)
    return EvalMetrics(**fields)  # type: ignore[arg-type]


def test_a_clear_improvement_is_promoted_with_its_numbers() -> None:
    decision = decide(_cand(), BASE, CFG)
    assert decision.promote
    assert decision.user_gain == pytest.approx(0.05)
    assert decision.regression_change == pytest.approx(0.005)
    assert "2.8500 vs 3.0000" in decision.reasons[0]
    assert "+5.00%" in decision.reasons[0]


def test_too_small_a_gain_is_rejected() -> None:
    decision = decide(_cand(user_nll=2.97), BASE, CFG)
    assert not decision.promote
    assert decision.reasons == [
        "user held-out NLL 2.9700 vs baseline 3.0000: gain +1.00% < required 2.00%"]
    assert not decide(_cand(user_nll=3.3), BASE, CFG).promote  # worse than baseline


def test_regression_beyond_the_bound_is_rejected() -> None:
    decision = decide(_cand(regression_nll=2.05), BASE, CFG)
    assert not decision.promote
    assert len(decision.reasons) == 1
    assert "worse by +2.50% > allowed 1.00%" in decision.reasons[0]


def test_every_failed_check_is_reported() -> None:
    decision = decide(
        _cand(user_nll=3.1, regression_nll=2.5, adapter_norm=9.0, heldout_examples=0,
              canary_failures=(("How are you?", "empty output in ''"),)),
        BASE, CFG)
    assert not decision.promote
    text = "\n".join(decision.reasons)
    for needle in ("gain", "worse by", "adapter norm 9.000 > bound 5.000",
                   "too few held-out examples: 0 < 8", "degenerate canary 'How are you?'"):
        assert needle in text
    assert len(decision.reasons) == 5


@pytest.mark.parametrize("field", ["user_nll", "regression_nll", "adapter_norm"])
def test_non_finite_metrics_are_rejected(field: str) -> None:
    for bad in (math.nan, math.inf):
        decision = decide(_cand(**{field: bad}), BASE, CFG)
        assert not decision.promote
        assert "non-finite" in decision.reasons[0]


def test_canaries_the_baseline_already_fails_do_not_count() -> None:
    failing = (("How are you?", "empty output in ''"),)
    baseline = EvalMetrics(3.0, 2.0, heldout_examples=8, regression_version="regression-v1",
                           canary_failures=failing)
    assert decide(_cand(canary_failures=failing), baseline, CFG).promote
    new = (("Hi", "'e' repeated 24 times"),)
    assert not decide(_cand(canary_failures=new), baseline, CFG).promote


def test_metrics_from_different_regression_sets_are_not_compared() -> None:
    decision = decide(_cand(regression_version="regression-v2"), BASE, CFG)
    assert not decision.promote
    assert "not comparable" in decision.reasons[0]


def test_too_few_heldout_examples_are_rejected_however_large_the_gain() -> None:
    # A 5% gain on 2 examples is within the noise of a mean over 2 messages.
    decision = decide(_cand(heldout_examples=2), BASE, CFG)
    assert not decision.promote
    assert decision.reasons == ["too few held-out examples: 2 < 8 (the gain would be noise)"]
    assert decide(_cand(heldout_examples=7), BASE, CFG).promote is False
    assert decide(_cand(heldout_examples=8), BASE, CFG).promote


def test_the_minimum_matches_the_default_holdout_and_is_configurable() -> None:
    from tessera.schemas.settings import Settings

    # The defaults agree: a default setup can promote at all.
    assert GateConfig().min_heldout_examples == Settings().holdout_k == 8
    # Small setups lower it through the gate overrides setting (as the pipeline reads it).
    settings = Settings(gate_overrides={**CFG.as_provenance(), "min_heldout_examples": 2})
    small = GateConfig.model_validate(settings.gate_overrides)
    assert decide(_cand(heldout_examples=2), BASE, small).promote
    with pytest.raises(ValueError, match="min_heldout_examples"):
        GateConfig(min_heldout_examples=-1)
