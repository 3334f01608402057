"""The gate's repetition canary: phrase loops the baseline does not have are refused."""

from __future__ import annotations

from tessera.schemas.settings import Settings
from tessera.workers.canary_repetition import repeated_trigrams
from tessera.workers.gate import EvalMetrics, GateConfig, decide

PROMPTS = ("What is the capital of France?", "How are you?")
LOOP = "I did a lot of things. I did a lot of things."
CFG = GateConfig(min_gain=0.01, max_regression=0.02, min_heldout_examples=0)


def _metrics(user_nll: float, *outputs: str) -> EvalMetrics:
    return EvalMetrics(user_nll=user_nll, regression_nll=2.0, adapter_norm=1.0,
                       heldout_examples=8, regression_version="regression-v1",
                       canary_outputs=outputs, canary_prompts=PROMPTS[: len(outputs)])


def test_a_phrase_loop_counts_its_repeated_trigrams() -> None:
    assert repeated_trigrams(LOOP) == 4
    assert repeated_trigrams("Paris is the capital of France, a city on the Seine.") == 0
    assert repeated_trigrams("") == 0


def test_a_candidate_looping_a_phrase_the_baseline_does_not_is_rejected_with_a_reason() -> None:
    baseline = _metrics(3.0, "Paris is the capital of France.", "I am fine, thanks.")
    candidate = _metrics(2.5, "Paris is the capital of France.", LOOP)

    decision = decide(candidate, baseline, CFG)

    assert not decision.promote  # although it gains 17% on the user's data
    (reason,) = decision.reasons
    assert reason.startswith("repetitive canary 'How are you?': 4 repeated word 3-grams "
                             "vs baseline 0 (more than 1 extra allowed)")


def test_repetition_the_baseline_has_too_is_not_held_against_the_candidate() -> None:
    baseline = _metrics(3.0, "Paris is the capital of France.", LOOP)
    candidate = _metrics(2.5, "Paris is the capital of France.", LOOP)
    assert decide(candidate, baseline, CFG).promote


def test_the_threshold_is_a_setting() -> None:
    baseline = _metrics(3.0, "Paris.", "I am fine, thanks.")
    candidate = _metrics(2.5, "Paris.", LOOP)
    settings = Settings(gate_overrides={"min_heldout_examples": 0, "max_canary_repeats": 4})
    lenient = GateConfig.model_validate(settings.gate_overrides)
    assert decide(candidate, baseline, lenient).promote  # 4 extra repeats allowed
    assert not decide(candidate, baseline, lenient.model_copy(
        update={"max_canary_repeats": 3})).promote
