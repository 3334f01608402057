"""The nightly job's plan on the real event log (no model): a users budget shared
round-robin across tenants, groups of K within a tenant, deferred users first next night."""

from __future__ import annotations

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.workers.scheduler import ScheduleConfig, TrainingScheduler
from tessera.workers.scheduler_state import SchedulerState
from tessera.workers.training_request import TrainingGroup, TrainingRequest

from .conftest import exchanges

pytestmark = pytest.mark.integration


def test_budget_is_shared_across_tenants_and_the_deferred_come_next_night(
    pg_store: PostgresEventStore, database_url: str,
) -> None:
    for user in ("alice", "bob", "carol", "dave"):
        pg_store.append(exchanges(user, 25, tenant="big"))
    pg_store.append(exchanges("erin", 25, style="hi there", tenant="small"))
    pg_store.append(exchanges("fred", 5, style="hi there", tenant="small"))  # too few
    singles: list[TrainingRequest] = []
    groups: list[TrainingGroup] = []
    config = ScheduleConfig(min_new_events=20, prior_min_new_events=1_000_000,
                            prior_wait_s=0, group_size=2, max_users=3)
    scheduler = TrainingScheduler(SchedulerState(database_url), singles.extend, config,
                                  send_groups=groups.extend)

    def night() -> tuple[list[str], list[list[str]]]:
        singles.clear()
        groups.clear()
        scheduler.nightly()
        return ([f"{r.tenant_id}/{r.user_id}" for r in singles],
                [[f"{m.tenant_id}/{m.user_id}" for m in g.members] for g in groups])

    # One user per tenant per round: the small tenant's one user is not crowded out by
    # the big tenant's four; the big tenant's two chosen users train as one group.
    assert night() == (["small/erin"], [["big/alice", "big/bob"]])
    # Deferred by the budget, not forgotten: the next night takes them first.
    assert night() == ([], [["big/carol", "big/dave"]])
    assert night() == ([], [])  # everyone requested; fred still has too few events

    with pytest.raises(ValueError, match="send_groups"):
        TrainingScheduler(SchedulerState(database_url), singles.extend, config)
