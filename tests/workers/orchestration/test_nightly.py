"""The nightly job and the threshold trigger on real events, and the demo's days."""

from __future__ import annotations

import pytest

from tessera.bench.chitchat import load_speakers
from tessera.bench.demo_days import run_demo_days
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.pipeline import RevisionPipeline
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingRequest

from .conftest import TENANT, exchanges

pytestmark = pytest.mark.integration


def test_nightly_requests_the_prior_first_then_users_with_enough_new_events(
    pg_store: PostgresEventStore, database_url: str,
) -> None:
    pg_store.append(exchanges("alice", 24) + exchanges("bob", 21) + exchanges("carol", 3))
    sent: list[list[TrainingRequest]] = []
    config = ScheduleConfig(min_new_events=20, threshold_new_events=10,
                            prior_min_new_events=40, prior_wait_s=0)
    scheduler = TrainingScheduler(SchedulerState(database_url), sent.append, config)

    requests = scheduler.nightly()

    assert [[(r.user_id, r.trigger) for r in batch] for batch in sent] == [
        [(PRIOR_USER_ID, "nightly")],  # the prior first, in its own batch
        [("alice", "nightly"), ("bob", "nightly")],  # carol has only 3 new events
    ]
    assert requests[0].up_to_position == pg_store.head_position()
    # Requested already: neither trigger asks again for the same events.
    assert scheduler.threshold_check() == []
    assert scheduler.nightly() == []

    pg_store.append(exchanges("alice", 12, seed=5))
    (again,) = scheduler.threshold_check()
    assert (again.user_id, again.trigger) == ("alice", "threshold")
    assert again.up_to_position == pg_store.head_position()
    assert scheduler.threshold_check() == []


def test_users_are_counted_from_their_last_revision_and_last_forget(
    pg_store: PostgresEventStore, database_url: str,
) -> None:
    state = SchedulerState(database_url)
    pg_store.append(exchanges("alice", 10))
    pg_store.forget_user(TENANT, "alice", actor="test", reason="asked")
    pg_store.append(exchanges("alice", 4, seed=3))
    assert state.users_due(5) == []  # the 10 forgotten events no longer count
    assert [d.new_events for d in state.users_due(4)] == [4]


@pytest.mark.slow
def test_demo_days_print_each_revision_with_its_decision(
    pipeline: RevisionPipeline, database_url: str,
) -> None:
    speakers = load_speakers(min_messages=24, limit=2, seed=3)
    lines: list[str] = []
    reports = run_demo_days(pipeline, database_url, tenant_id=TENANT, days=2,
                            messages_per_user=24, speakers=speakers, echo=lines.append)

    assert [r.day for r in reports] == [1, 2]
    decided = [o for r in reports for o in r.outcomes if o.outcome != "skipped"]
    assert decided and decided[0].user_id == PRIOR_USER_ID  # night 1 trains the prior first
    for outcome in decided:
        row = pipeline.store.get_revision(outcome.revision_id or "")
        assert row is not None and row.state in ("promoted", "rejected", "superseded")
        assert row.reasons == outcome.reasons and outcome.reasons
        assert any(outcome.outcome.upper() in line and (outcome.revision_id or "") in line
                   for line in lines)
    assert lines[-1].startswith("2 days:")
    assert "day 1: 24 new events from 2 users; nightly job" in lines
    assert [(r.events, r.new_events) for r in reports] == [(24, 24), (24, 24)]

    # The same history again in the same tenant: every event id is known, nothing is new,
    # and the printed count says so instead of calling the duplicates new.
    again: list[str] = []
    replayed = run_demo_days(pipeline, database_url, tenant_id=TENANT, days=2,
                             messages_per_user=24, speakers=speakers, echo=again.append)
    assert [(r.events, r.new_events) for r in replayed] == [(24, 0), (24, 0)]
    assert "day 1: 0 new events from 2 users (24 already in the log); nightly job" in again
    assert not [o for r in replayed for o in r.outcomes if o.outcome != "skipped"]
