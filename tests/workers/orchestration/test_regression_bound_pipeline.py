"""The regression bound in the pipeline (a personal config's `max_regression_rise`, and
its `step_stretch`): alone and in a group, the stored candidate is the bounded (or
stretched) one, its provenance says so, and re-training it from the provenance gives the
same digest."""

from __future__ import annotations

import logging

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.evaluator import regression_nll
from tessera.workers.group_night import run_group
from tessera.workers.pipeline import Engine, RevisionOutcome, RevisionPipeline
from tessera.workers.reproduce import reproduce_revision
from tessera.workers.training_request import TrainingGroup, TrainingRequest

from .conftest import STYLES, TENANT, exchanges, tiny_pipeline_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOUND = 0.0  # no rise at all over the warm start: the tightest bound there is


def _request(store: PostgresEventStore, user: str) -> TrainingRequest:
    return TrainingRequest(tenant_id=TENANT, user_id=user,
                           up_to_position=store.head_position(), trigger="test")


def _promoted_prior(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine,
    personal_overrides: dict[str, float],
) -> tuple[RevisionPipeline, RevisionOutcome]:
    """A pipeline with `personal_overrides`, its tenant prior promoted, then new events
    of alice, bob and carol in the log."""
    pipeline = RevisionPipeline(pg_store, adapters, engine, tiny_pipeline_config(
        personal_overrides=personal_overrides))
    for user in STYLES:
        pg_store.append(exchanges(user, 24))
    prior = pipeline.run(_request(pg_store, PRIOR_USER_ID))
    assert prior.outcome == "promoted", prior.reasons
    pg_store.append(exchanges("alice", 20, seed=1) + exchanges("bob", 20, seed=1)
                    + exchanges("carol", 20, seed=1))
    return pipeline, prior


@pytest.mark.timeout(1200)
def test_bounded_candidates_alone_and_in_a_group_are_stored_and_reproduced(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pipeline, prior = _promoted_prior(pg_store, adapters, engine,
                                      {"lr": 5e-2, "max_regression_rise": BOUND})
    prior_row = pg_store.get_revision(prior.revision_id or "")
    assert prior_row is not None
    assert prior_row.provenance["hyperparameters"]["train"]["max_regression_rise"] is None
    assert "regression_bound" not in prior_row.provenance["hyperparameters"]

    with caplog.at_level(logging.INFO, logger="tessera.workers.regression_bound"):
        alone = pipeline.run(_request(pg_store, "alice"))
        group = TrainingGroup.of([_request(pg_store, "bob"), _request(pg_store, "carol")])
        together = run_group(pipeline, group)
    assert alone.outcome in ("promoted", "rejected") and len(together) == 2
    # one bound per candidate, in training order: alice alone, then bob and carol
    chosen = [r.regression_bound for r in caplog.records if hasattr(r, "regression_bound")]
    assert len(chosen) == 3, chosen
    # lr 5e-2 on the tiny model raises the regression NLL: every step was pulled back
    assert all(b["factor"] < 1 and b["rise"] < b["trained_rise"] for b in chosen), chosen

    start = regression_nll(engine.model, engine.tokenizer,
                           adapter=adapters.path(prior_row.adapter_digest),
                           regression=pipeline.regression, max_length=64)
    for outcome, bound in zip((alone, *together), chosen, strict=True):
        row = pg_store.get_revision(outcome.revision_id or "")
        assert row is not None and row.parent_revision_id == prior.revision_id
        hyper = row.provenance["hyperparameters"]
        assert hyper["train"]["max_regression_rise"] == BOUND
        assert hyper["regression_bound"] == {"max_rise": BOUND, **bound}
        stored = regression_nll(engine.model, engine.tokenizer,
                                adapter=adapters.path(row.adapter_digest),
                                regression=pipeline.regression, max_length=64)
        # what was stored is what the bound chose (not the adapter as trained, if it was
        # pulled back): its rise over the prior is the one the bound measured
        assert stored / start - 1 == pytest.approx(bound["rise"], abs=1e-5), bound
        assert bound["rise"] <= BOUND or bound["rise"] <= bound["trained_rise"]
        again = reproduce_revision(pipeline, row.revision_id)
        assert again.dataset_matches and again.adapter_matches, row.revision_id


@pytest.mark.timeout(1200)
def test_stretched_candidates_alone_and_in_a_group_are_stored_and_reproduced(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # a bound no step breaks: every candidate is its step stretched twice as far
    pipeline, _ = _promoted_prior(pg_store, adapters, engine, {
        "lr": 5e-2, "max_regression_rise": 1.0, "step_stretch": 2.0})
    with caplog.at_level(logging.INFO, logger="tessera.workers.regression_bound"):
        alone = pipeline.run(_request(pg_store, "alice"))
        together = run_group(pipeline, TrainingGroup.of(
            [_request(pg_store, "bob"), _request(pg_store, "carol")]))
    chosen = [r.regression_bound for r in caplog.records if hasattr(r, "regression_bound")]
    assert [b["factor"] for b in chosen] == [2.0, 2.0, 2.0], chosen
    for outcome, bound in zip((alone, *together), chosen, strict=True):
        row = pg_store.get_revision(outcome.revision_id or "")
        assert row is not None
        hyper = row.provenance["hyperparameters"]
        assert hyper["train"]["step_stretch"] == 2.0
        assert hyper["regression_bound"] == {"max_rise": 1.0, "stretch": 2.0, **bound}
        again = reproduce_revision(pipeline, row.revision_id)
        assert again.dataset_matches and again.adapter_matches, row.revision_id
