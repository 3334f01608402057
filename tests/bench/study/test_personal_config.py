"""Personal revisions train with the personal config, tenant priors with the prior's
(`PipelineConfig.personal_train`, `TESSERA_PERSONAL_TRAIN_OVERRIDES`); each revision's
provenance names the config that trained it, and re-training from that record alone
gives the same adapter."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, EventType
from tessera.schemas.settings import Settings
from tessera.workers.adapter_store import LocalAdapterStore, sha256_file
from tessera.workers.dataset import build_dataset
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import PERSONAL_DEFAULTS, LoraTrainConfig
from tessera.workers.pipeline import INTERACTIONS, Engine, PipelineConfig, RevisionPipeline
from tessera.workers.reproduce import reproduce_revision
from tessera.workers.runtime import pipeline_config
from tessera.workers.trainer import train_adapter
from tessera.workers.training_request import TrainingRequest

from .conftest import PROMPTS, STYLES

TENANT = "personal-cfg"
PRIOR_TRAIN = LoraTrainConfig(rank=4, alpha=8.0, epochs=2, batch_size=8, lr=2e-2,
                              max_length=64, dropout=0.0)
PERSONAL = {"epochs": 1, "lr": 5e-3}


def test_personal_train_is_the_prior_config_with_the_overrides() -> None:
    config = PipelineConfig(train=PRIOR_TRAIN, personal_overrides=PERSONAL)
    assert config.train_config("prior") == PRIOR_TRAIN
    personal = config.train_config("personal")
    assert (personal.epochs, personal.lr) == (1, 5e-3)
    assert personal.model_dump(exclude={"epochs", "lr"}) == PRIOR_TRAIN.model_dump(
        exclude={"epochs", "lr"})
    # No overrides: personal revisions train exactly like the prior (library default).
    assert PipelineConfig(train=PRIOR_TRAIN).personal_train == PRIOR_TRAIN


@pytest.mark.parametrize("overrides", [{"rank": 2}, {"target_modules": "q_proj"},
                                       {"alpha": 4.0}])
def test_personal_overrides_may_not_change_the_adapter_shape(overrides: dict[str, object]
                                                             ) -> None:
    # A personal chain warm-starts from the prior: a different shape could never load.
    with pytest.raises(ValueError, match="may not change"):
        PipelineConfig(train=PRIOR_TRAIN, personal_overrides=overrides)


def test_invalid_personal_overrides_fail_at_construction() -> None:
    with pytest.raises(ValidationError):
        PipelineConfig(train=PRIOR_TRAIN, personal_overrides={"lr": -1.0})
    with pytest.raises(ValidationError):
        PipelineConfig(train=PRIOR_TRAIN, personal_overrides={"no_such_field": 1})


def test_personal_overrides_from_settings_apply_on_top_of_the_train_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("TESSERA_PERSONAL_TRAIN_OVERRIDES", "TESSERA_TRAIN_OVERRIDES"):
        monkeypatch.delenv(name, raising=False)
    # The shipped default is the study's winner (lora_config.PERSONAL_DEFAULTS).
    default = pipeline_config(Settings())
    assert default.personal_overrides == PERSONAL_DEFAULTS == {
        "lr": 8e-4, "prox_weight": 0.3, "max_regression_rise": 0.015, "step_stretch": 2.0}
    assert default.personal_train == default.train.with_overrides(PERSONAL_DEFAULTS)
    monkeypatch.setenv("TESSERA_PERSONAL_TRAIN_OVERRIDES", '{"epochs": 3}')
    monkeypatch.setenv("TESSERA_TRAIN_OVERRIDES", '{"lr": 3e-4, "rank": 4, "alpha": 8}')
    config = pipeline_config(Settings())
    assert (config.train.lr, config.train.epochs) == (3e-4, 2)
    # Applied on top of the prior's config: rank and lr come from TESSERA_TRAIN_OVERRIDES.
    assert (config.personal_train.rank, config.personal_train.lr,
            config.personal_train.epochs) == (4, 3e-4, 3)


def _exchanges(user: str, n: int, *, seed: int = 0) -> list[EventEnvelope]:
    rng = random.Random(f"{user}/{seed}")
    start = datetime(2026, 1, 1 + seed, tzinfo=UTC)
    return [EventEnvelope(event_type=EventType.EXCHANGE, tenant_id=TENANT, user_id=user,
                          occurred_at=start + timedelta(minutes=i),
                          data={"prompt": rng.choice(PROMPTS), "response": STYLES[user]})
            for i in range(n)]


@pytest.mark.integration
@pytest.mark.slow
def test_personal_revision_uses_the_personal_config_and_the_prior_the_prior_config(
    study_engine: Engine, database_url: str, tmp_path: Path
) -> None:
    config = PipelineConfig(train=PRIOR_TRAIN, personal_overrides=PERSONAL,
                            gate=GateConfig(min_gain=0.0, max_regression=0.5,
                                            min_heldout_examples=3), seed=7,
                            holdout_k=3, min_train_examples=4, prior_eval_users=2,
                            eval_max_length=64)
    adapters = LocalAdapterStore(tmp_path / "adapters")
    with PostgresEventStore(database_url) as store:
        pipeline = RevisionPipeline(store, adapters, study_engine, config)
        for user in STYLES:
            store.append(_exchanges(user, 16))
        prior = pipeline.run(TrainingRequest(tenant_id=TENANT, user_id=PRIOR_USER_ID,
                                             up_to_position=store.head_position(),
                                             trigger="test"))
        assert prior.outcome == "promoted", prior.reasons
        store.append(_exchanges("alice", 12, seed=1))
        alice = pipeline.run(TrainingRequest(tenant_id=TENANT, user_id="alice",
                                             up_to_position=store.head_position(),
                                             trigger="test"))
        assert alice.outcome in ("promoted", "rejected"), alice.reasons
        assert alice.parent_revision_id == prior.revision_id

        prior_row = store.get_revision(str(prior.revision_id))
        alice_row = store.get_revision(str(alice.revision_id))
        assert prior_row is not None and alice_row is not None
        prior_hyper = prior_row.provenance["hyperparameters"]
        alice_hyper = alice_row.provenance["hyperparameters"]
        assert prior_hyper["train_config"] == "prior" and prior_hyper["personal_overrides"] == {}
        assert LoraTrainConfig.model_validate(prior_hyper["train"]) == PRIOR_TRAIN
        assert alice_hyper["train_config"] == "personal"
        assert alice_hyper["personal_overrides"] == PERSONAL
        assert LoraTrainConfig.model_validate(alice_hyper["train"]) == config.personal_train

        # The record is what actually trained: re-training from it alone gives the same
        # adapter, and the prior's config on the same data and warm start gives another.
        again = reproduce_revision(pipeline, str(alice.revision_id))
        assert again.dataset_matches and again.adapter_matches
        events = store.read(tenant_id=TENANT, user_id="alice", event_types=INTERACTIONS)
        split = build_dataset(events, holdout_k=config.holdout_k,
                              from_position=int(alice_hyper["dataset"]["after"]),
                              to_position=alice_row.dataset_to)
        assert split.digest == alice_row.dataset_digest
        with_prior_config = train_adapter(
            study_engine.model, study_engine.tokenizer, split.train, config=PRIOR_TRAIN,
            base_digest=study_engine.base.digest,
            init_adapter=adapters.path(prior_row.adapter_digest), seed=config.seed,
            out_dir=tmp_path / "prior-config")
        assert sha256_file(with_prior_config.blob_path) != alice_row.adapter_digest
