"""A forgotten user's data leaves the tenant prior at the next night: the served prior
trained on them is marked by the tombstone, the nightly run requests a new prior first
(however few new events), and the new prior, trained without them, replaces it."""

from __future__ import annotations

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID, EventType
from tessera.workers.pipeline import RevisionPipeline
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingRequest

from .conftest import STYLES, TENANT, exchanges

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_next_nightly_run_retrains_the_prior_without_the_forgotten_user(
    pipeline: RevisionPipeline, pg_store: PostgresEventStore, database_url: str,
) -> None:
    for user in STYLES:
        pg_store.append(exchanges(user, 12))
    sent: list[list[TrainingRequest]] = []
    # Far more new events than the tenant will get: only the forget can ask for a prior.
    config = ScheduleConfig(min_new_events=1000, prior_min_new_events=1000, prior_wait_s=0)
    scheduler = TrainingScheduler(SchedulerState(database_url), sent.append, config)
    first = pipeline.run(TrainingRequest(tenant_id=TENANT, user_id=PRIOR_USER_ID,
                                         up_to_position=pg_store.head_position(),
                                         trigger="test"))
    assert first.outcome == "promoted", first.reasons
    assert scheduler.nightly() == []  # nothing due

    pg_store.forget_user(TENANT, "alice", actor="dpo", reason="erasure request")
    (tomb,) = pg_store.read(tenant_id=TENANT, user_id="alice",
                            event_types=[EventType.USER_FORGOTTEN])
    assert tomb.envelope.data["retrain_prior_revision_ids"] == [first.revision_id]

    (request,) = scheduler.nightly()
    assert sent == [[request]] and request.user_id == PRIOR_USER_ID  # the prior, first
    assert request.up_to_position >= tomb.position

    second = pipeline.run(request)

    assert second.outcome == "promoted", second.reasons
    assert second.baseline_revision_id is None  # gated against the base, not the old prior
    head = pg_store.get_head(TENANT, PRIOR_USER_ID)
    assert head is not None and head.revision_id == second.revision_id
    row = pg_store.get_revision(second.revision_id or "")
    assert row is not None
    assert "alice" not in row.provenance["hyperparameters"]["dataset"]["users"]
    assert scheduler.nightly() == []  # the served prior holds no forgotten data now
