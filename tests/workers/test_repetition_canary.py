"""The gate's repetition canary: phrase loops the baseline does not have are refused."""

from __future__ import annotations

import pytest

from tessera.schemas.settings import Settings
from tessera.workers.canary_repetition import loop_length, repetition_failures
from tessera.workers.gate import EvalMetrics, GateConfig, decide
from tessera.workers.repetition import repeated_word_ngrams

PROMPTS = ("What is the capital of France?", "How are you?")
LOOP = "I did a lot of things. I did a lot of things."
CFG = GateConfig(min_gain=0.01, max_regression=0.02, min_heldout_examples=0)


def _metrics(user_nll: float, *outputs: str) -> EvalMetrics:
    return EvalMetrics(user_nll=user_nll, regression_nll=2.0, adapter_norm=1.0,
                       heldout_examples=8, regression_version="regression-v1",
                       canary_outputs=outputs, canary_prompts=PROMPTS[: len(outputs)])


PARALLEL = "I'm a math teacher. I'm a math student."  # a person's answer, not a loop
CUT_LOOP = "I'm a helpful AI assistant named SmolLM. I'm a helpful AI"  # cut by the token limit


@pytest.mark.parametrize(("text", "length"), [
    (LOOP, 6), (CUT_LOOP, 5), ("the the the the the", 4), ("we go we go we go", 4),
    ("the the the", 2),
    (PARALLEL, 0), ("I'm a little overwhelmed. I'm a little confused.", 0),
    ("I'm a fun guy. I'm a math teacher. I'm a math", 0), ("we go we go", 0),
    ("yes yes", 0), ("Paris is the capital of France, a city on the Seine.", 0), ("", 0),
])
def test_a_loop_repeats_the_words_right_before_it(text: str, length: int) -> None:
    assert loop_length(text) == length


def test_parallel_phrasing_passes_where_the_3_gram_count_refused_it() -> None:
    assert repeated_word_ngrams(PARALLEL, 3) == 2  # what the earlier canary refused
    assert not repetition_failures(PROMPTS[1:], [PARALLEL], [""], max_extra=0)
    assert repetition_failures(PROMPTS[1:], [CUT_LOOP], [""], max_extra=0)


def test_a_candidate_looping_a_phrase_the_baseline_does_not_is_rejected_with_a_reason() -> None:
    baseline = _metrics(3.0, "Paris is the capital of France.", "I am fine, thanks.")
    candidate = _metrics(2.5, "Paris is the capital of France.", LOOP)

    decision = decide(candidate, baseline, CFG)

    assert not decision.promote  # although it gains 17% on the user's data
    (reason,) = decision.reasons
    assert reason.startswith("repetitive canary 'How are you?': a loop of 6 words vs the "
                             "baseline's 0 (more than 0 longer allowed)")


def test_repetition_the_baseline_has_too_is_not_held_against_the_candidate() -> None:
    baseline = _metrics(3.0, "Paris is the capital of France.", LOOP)
    candidate = _metrics(2.5, "Paris is the capital of France.", LOOP)
    assert decide(candidate, baseline, CFG).promote


def test_the_threshold_is_a_setting() -> None:
    baseline = _metrics(3.0, "Paris.", "I am fine, thanks.")
    candidate = _metrics(2.5, "Paris.", LOOP)
    settings = Settings(gate_overrides={"min_heldout_examples": 0, "max_canary_repeats": 6})
    lenient = GateConfig.model_validate(settings.gate_overrides)
    assert decide(candidate, baseline, lenient).promote  # a 6-word loop allowed
    assert not decide(candidate, baseline, lenient.model_copy(
        update={"max_canary_repeats": 5})).promote
