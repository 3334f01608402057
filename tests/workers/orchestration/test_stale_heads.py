"""Stale heads: after a refreshed tenant prior, nobody is served worse than it.

Night 1 trains a weak prior and personal heads on it: alice's weakly (her head barely
beats that prior), bob's and carol's strongly (each memorises their one way of
answering). Night 2 trains a strong prior on more data. Alice's head now loses to it on
her own held-out examples: it is superseded (audited) and alice is served the prior. Bob's
and carol's heads still beat it on theirs and are kept. Carol then changes how she writes;
her rebased candidate is gated against the better of (her head, the new prior) on her new
examples — the prior — regression set included.
"""

from __future__ import annotations

import pytest

from tessera.events.catalog import served_revision
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID, EventType
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.gate import GateConfig
from tessera.workers.pipeline import Engine, RevisionOutcome, RevisionPipeline
from tessera.workers.reproduce import reproduce_revision
from tessera.workers.training_request import TrainingRequest

from .conftest import STYLES, TENANT, exchanges, tiny_pipeline_config, tiny_train_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CAROL_NOW = "honestly, whatever works for you is fine by me."
# Heads trained this hard loop in their canaries (test_repetition_canary_tiny.py); this
# test is about held-out NLL, so the repetition canary is relaxed here.
GATE = GateConfig(min_gain=0.01, max_regression=0.5, min_heldout_examples=4,
                  max_canary_repeats=100)


def _run(pipeline: RevisionPipeline, store: PostgresEventStore, user: str,
         up_to: int | None = None) -> RevisionOutcome:
    position = store.head_position() if up_to is None else up_to
    return pipeline.run(TrainingRequest(tenant_id=TENANT, user_id=user,
                                        up_to_position=position, trigger="test"))


def _night_one(store: PostgresEventStore, adapters: LocalAdapterStore,
               engine: Engine) -> dict[str, RevisionOutcome]:
    weak = RevisionPipeline(store, adapters, engine, tiny_pipeline_config(
        train=tiny_train_config(epochs=1, lr=2e-3), gate=GATE))
    strong_personal = RevisionPipeline(store, adapters, engine, tiny_pipeline_config(
        train=tiny_train_config(epochs=1, lr=2e-3), gate=GATE,
        personal_overrides={"epochs": 10, "lr": 1e-2}))
    for user in STYLES:
        store.append(exchanges(user, 24))
    out = {"p1": _run(weak, store, PRIOR_USER_ID)}
    for user in ("alice", "bob", "carol"):
        store.append(exchanges(user, 16, seed=1))
    out["alice"] = _run(weak, store, "alice")
    out["bob"] = _run(strong_personal, store, "bob")
    out["carol"] = _run(strong_personal, store, "carol")
    for name, outcome in out.items():
        assert outcome.outcome == "promoted", (name, outcome.reasons)
    return out


def test_a_head_that_loses_to_the_new_prior_is_superseded_and_the_prior_served(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine,
) -> None:
    night1 = _night_one(pg_store, adapters, engine)
    published: list[tuple[str, str]] = []
    strong = RevisionPipeline(pg_store, adapters, engine, tiny_pipeline_config(gate=GATE),
                              publish=lambda e: published.append((e.user_id, e.event_type)))
    for user in STYLES:
        pg_store.append(exchanges(user, 8, seed=2))

    up_to = pg_store.head_position()
    p2 = _run(strong, pg_store, PRIOR_USER_ID, up_to)

    assert p2.outcome == "promoted", p2.reasons
    alice_head = pg_store.get_revision(night1["alice"].revision_id or "")
    assert alice_head is not None and alice_head.state == "superseded"
    served = served_revision(pg_store, TENANT, "alice")
    assert (served.source, served.revision_id) == ("prior", p2.revision_id)
    (event,) = pg_store.read(tenant_id=TENANT, user_id="alice",
                             event_types=[EventType.REVISION_SUPERSEDED_BY_PRIOR])
    figures = event.envelope.data
    assert figures["revision_id"] == alice_head.revision_id
    assert figures["prior_revision_id"] == p2.revision_id
    assert figures["prior_nll"] < figures["head_nll"]
    assert figures["heldout_positions"] == alice_head.provenance["heldout_positions"]
    # The head's figure is the one its gate measured on the same examples.
    assert figures["head_nll"] == pytest.approx(alice_head.metrics["user_nll"], rel=1e-4)
    assert "beats this head" in figures["reason"]
    assert published == [(PRIOR_USER_ID, "revision.promoted"),
                         ("alice", "revision.superseded_by_prior")]
    # Heads that still beat the new prior on their held-out examples are kept.
    for user in ("bob", "carol"):
        served = served_revision(pg_store, TENANT, user)
        assert (served.source, served.revision_id) == ("personal", night1[user].revision_id)

    # The same prior request again (a retry after a crash) supersedes nothing twice.
    again = _run(strong, pg_store, PRIOR_USER_ID, up_to)
    assert again.outcome == "skipped"
    assert len(pg_store.read(tenant_id=TENANT,
                             event_types=[EventType.REVISION_SUPERSEDED_BY_PRIOR])) == 1

    # Alice's next revision starts from the new prior and is gated against it.
    pg_store.append(exchanges("alice", 12, seed=3))
    alice = _run(strong, pg_store, "alice")
    assert alice.parent_revision_id == p2.revision_id
    assert alice.baseline_revision_id == p2.revision_id

    # Carol changes how she writes: on her new examples the new prior (which saw them)
    # beats her head, so her rebased candidate is gated against the prior, regression
    # set included.
    pg_store.append(exchanges("carol", 24, style=CAROL_NOW, seed=4))
    carol = _run(strong, pg_store, "carol")
    assert carol.parent_revision_id == p2.revision_id
    assert carol.baseline_metrics["prior_user_nll"] < carol.baseline_metrics["head_user_nll"]
    assert carol.baseline_revision_id == p2.revision_id
    p2_row = pg_store.get_revision(p2.revision_id or "")
    assert p2_row is not None
    base_reg = carol.baseline_metrics["regression_nll"]
    assert base_reg == pytest.approx(p2_row.metrics["regression_nll"])
    assert carol.metrics["regression_change"] == pytest.approx(
        (carol.metrics["regression_nll"] - base_reg) / base_reg)
    evaluated = pg_store.get_revision(carol.revision_id or "")
    assert evaluated is not None and evaluated.baseline_revision_id == p2.revision_id

    # Bob's head was kept: his next candidate rebases on the new prior, and under a
    # regression bound the bound holds against his head too (the gate may compare with
    # it); the head is recorded, so re-training the revision finds it.
    bounded = RevisionPipeline(pg_store, adapters, engine, tiny_pipeline_config(
        gate=GATE, personal_overrides={"max_regression_rise": 0.0}))
    pg_store.append(exchanges("bob", 12, seed=5))
    bob = _run(bounded, pg_store, "bob")
    assert bob.parent_revision_id == p2.revision_id
    assert bob.baseline_revision_id in (p2.revision_id, night1["bob"].revision_id)
    bob_row = pg_store.get_revision(bob.revision_id or "")
    bob_head = pg_store.get_revision(night1["bob"].revision_id or "")
    assert bob_row is not None and bob_head is not None
    bound = bob_row.provenance["hyperparameters"]["regression_bound"]
    assert bound["also_within"] == bob_head.adapter_digest
    rebuilt = reproduce_revision(bounded, bob_row.revision_id)
    assert rebuilt.dataset_matches and rebuilt.adapter_matches
