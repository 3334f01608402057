"""A forget that lands while a revision trains: the log refuses the revision, its blob
is deleted, and nothing trained on the erased data is recorded or served."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera.events.catalog import served_revision
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.gate import EvalMetrics
from tessera.workers.pipeline import RevisionPipeline, RevisionPlan
from tessera.workers.training_request import TrainingRequest

from .conftest import STYLES, TENANT, exchanges

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _forget_while_training(
    monkeypatch: pytest.MonkeyPatch, pipeline: RevisionPipeline, store: PostgresEventStore,
    user: str,
) -> None:
    real = pipeline.train_candidate

    def train_then_forget(plan: RevisionPlan, out_dir: Path | None = None) -> Path:
        blob = real(plan, out_dir)
        store.forget_user(TENANT, user, actor="dpo", reason="erasure request")
        return blob

    monkeypatch.setattr(pipeline, "train_candidate", train_then_forget)


def _request(store: PostgresEventStore, user: str) -> TrainingRequest:
    return TrainingRequest(tenant_id=TENANT, user_id=user,
                           up_to_position=store.head_position(), trigger="test")


def test_a_personal_revision_trained_across_a_forget_is_refused_and_its_blob_deleted(
    monkeypatch: pytest.MonkeyPatch, pipeline: RevisionPipeline, pg_store: PostgresEventStore,
    adapters: LocalAdapterStore,
) -> None:
    pg_store.append(exchanges("alice", 20))
    request = _request(pg_store, "alice")
    _forget_while_training(monkeypatch, pipeline, pg_store, "alice")

    outcome = pipeline.run(request)

    assert outcome.outcome == "skipped" and outcome.revision_id is None
    assert "forgotten" in outcome.reasons[0]
    assert pg_store.list_revisions(TENANT, "alice") == []
    assert adapters.list() == []  # the blob made of her data is gone
    assert served_revision(pg_store, TENANT, "alice").source == "base"


def test_a_prior_sampled_across_a_users_forget_is_refused(
    monkeypatch: pytest.MonkeyPatch, pipeline: RevisionPipeline, pg_store: PostgresEventStore,
    adapters: LocalAdapterStore,
) -> None:
    for user in STYLES:
        pg_store.append(exchanges(user, 12))
    request = _request(pg_store, PRIOR_USER_ID)
    _forget_while_training(monkeypatch, pipeline, pg_store, "bob")

    outcome = pipeline.run(request)

    assert outcome.outcome == "skipped" and "acme/bob" in outcome.reasons[0]
    assert pg_store.list_revisions(TENANT, PRIOR_USER_ID) == []
    assert adapters.list() == []


def test_a_revision_forgotten_between_training_and_decision_is_not_decided(
    monkeypatch: pytest.MonkeyPatch, pipeline: RevisionPipeline, pg_store: PostgresEventStore,
    adapters: LocalAdapterStore,
) -> None:
    pg_store.append(exchanges("carol", 20))
    request = _request(pg_store, "carol")
    real = pipeline._evaluate
    calls: list[Path | None] = []

    def forget_then_evaluate(adapter: Path | None, plan: RevisionPlan) -> EvalMetrics:
        if not calls:  # the candidate is recorded by now; the forget marks it forgotten
            pg_store.forget_user(TENANT, "carol", actor="dpo", reason="erasure request")
        calls.append(adapter)
        return real(adapter, plan)

    monkeypatch.setattr(pipeline, "_evaluate", forget_then_evaluate)
    outcome = pipeline.run(request)

    assert outcome.outcome == "skipped"
    (row,) = pg_store.list_revisions(TENANT, "carol")
    assert row.state == "forgotten"
    assert not adapters.exists(row.adapter_digest)
    assert served_revision(pg_store, TENANT, "carol").source == "base"
