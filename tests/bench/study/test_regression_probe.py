"""The regression probe: fact recall scoring, and arms warm-started from one shared prior."""

from __future__ import annotations

import pytest

from tessera.bench.study.regression_probe import content_words, fact_recall, run_probe
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.pipeline import Engine


def test_fact_recall_counts_reference_content_words() -> None:
    reference = "The capital of France is Paris."
    assert content_words(reference) == {"capital", "france", "paris"}
    assert fact_recall("Paris, of course.", reference) == pytest.approx(1 / 3)
    assert fact_recall("The capital of France is Paris!", reference) == 1.0
    assert fact_recall("lol idk", reference) == 0.0
    assert fact_recall("It is 42.", "12 plus 30 is 42.") == pytest.approx(1 / 4)


def test_arms_start_from_the_same_prior(study_engine: Engine) -> None:
    prior = LoraTrainConfig(rank=4, alpha=8, epochs=1, batch_size=8, lr=2e-2, max_length=48,
                            dropout=0.0)
    doc = run_probe(
        study_engine.model, study_engine.tokenizer, base_digest=study_engine.base.digest,
        arms={"still": {"lr": 1e-9, "max_steps": 1}, "hard": {"lr": 5e-2, "epochs": 2}},
        prior_config=prior, n_speakers=2, min_messages=400, seed=0, max_train=8, max_test=4,
        answer_tokens=4,
    )
    assert len(doc["per_speaker"]) == 2
    for row in doc["per_speaker"]:
        still, hard = row["arms"]["still"], row["arms"]["hard"]
        # A step of lr 1e-9 from the prior is the prior: same NLLs, same answers' recall.
        assert still["test_nll"] == pytest.approx(row["shared"]["test_nll"], rel=1e-4)
        assert still["regression_vs_shared"] == pytest.approx(0.0, abs=1e-4)
        assert hard["test_nll"] != pytest.approx(row["shared"]["test_nll"], rel=1e-3)
        assert 0.0 <= hard["fact_recall"] <= 1.0
    assert set(doc["aggregate"]) >= {"still", "hard", "fact_recall_base", "fact_recall_shared"}
