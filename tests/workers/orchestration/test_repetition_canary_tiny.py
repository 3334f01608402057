"""The repetition canary on the tiny model: an over-trained head that loops phrases in its
canary answers is refused, although it predicts the user's held-out examples far better."""

from __future__ import annotations

import pytest

from tessera.events.catalog import served_revision
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.pipeline import Engine, RevisionPipeline
from tessera.workers.training_request import TrainingRequest

from .conftest import STYLES, TENANT, exchanges, tiny_pipeline_config, tiny_train_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_candidate_whose_canaries_loop_more_than_the_baselines_is_rejected(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine,
) -> None:
    pipeline = RevisionPipeline(pg_store, adapters, engine, tiny_pipeline_config(
        train=tiny_train_config(epochs=1, lr=2e-3),
        personal_overrides={"epochs": 10, "lr": 1e-2}))  # hard enough to loop

    def run(user: str) -> tuple[str, list[str], str | None]:
        out = pipeline.run(TrainingRequest(tenant_id=TENANT, user_id=user, trigger="test",
                                           up_to_position=pg_store.head_position()))
        return out.outcome, out.reasons, out.revision_id

    for user in STYLES:
        pg_store.append(exchanges(user, 24))
    prior, reasons, prior_id = run(PRIOR_USER_ID)
    assert prior == "promoted", reasons
    pg_store.append(exchanges("carol", 16, seed=1))

    outcome, reasons, _ = run("carol")

    assert outcome == "rejected"
    # Every other check passed: the loops alone refuse it.
    assert reasons and all(r.startswith("repetitive canary ") for r in reasons), reasons
    assert all("vs the baseline's 0 (more than 0 longer allowed)" in r for r in reasons)
    served = served_revision(pg_store, TENANT, "carol")
    assert (served.source, served.revision_id) == ("prior", prior_id)
