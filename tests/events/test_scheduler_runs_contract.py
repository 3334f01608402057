"""SchedulerRuns: one contract, run on PostgreSQL and on the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tessera.events.memory_store import MemoryEventStore
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.scheduler_runs import (
    Due,
    MemorySchedulerRuns,
    PostgresSchedulerRuns,
    SchedulerRuns,
    SentRequest,
)
from tessera.events.store import EventStore
from tessera.schemas.events import PRIOR_USER_ID

from .factories import evaluated, exchange, promoted, trained

T = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)


@pytest.fixture()
def runs(store: EventStore) -> Iterator[SchedulerRuns]:
    if isinstance(store, PostgresEventStore):
        yield PostgresSchedulerRuns(store.url)
    else:
        assert isinstance(store, MemoryEventStore)
        yield MemorySchedulerRuns(store)


def _sent(tenant: str, user: str, position: int) -> SentRequest:
    return SentRequest(tenant, user, position, "test", T)


def test_users_due_count_new_events_after_revisions_requests_and_forgets(
    store: EventStore, runs: SchedulerRuns
) -> None:
    # Positions 1..9: alice 1,3,5,7,9; bob 2,4,6,8.  Then carol 10, 11 in t2.
    store.append([exchange("t1", "alice" if n % 2 == 0 else "bob", n) for n in range(9)])
    store.append([exchange("t2", "carol", 10), exchange("t2", "carol", 11)])
    assert runs.users_due(3) == [Due("t1", "alice", 5, 9), Due("t1", "bob", 4, 8)]
    assert runs.users_due(2, tenant_id="t2") == [Due("t2", "carol", 2, 11)]
    # alice's revision covers up to 10 (factories' dataset_to): nothing new for her.
    store.append([trained("t1", "alice", "r1")])
    # bob's request up to 4 leaves 6 and 8.
    runs.record_requests([_sent("t1", "bob", 4), _sent("t1", "bob", 4)])  # idempotent
    assert runs.users_due(1, tenant_id="t1") == [Due("t1", "bob", 2, 8)]
    # A forget restarts bob's count after his tombstone.
    store.forget_user("t1", "bob", actor="admin", reason="asked")
    assert runs.users_due(1, tenant_id="t1") == []
    store.append([exchange("t1", "bob", 20)])
    (due,) = runs.users_due(1, tenant_id="t1")
    assert (due.user_id, due.new_events) == ("bob", 1)


def test_priors_due_count_the_tenant_after_the_priors_own_revision_and_requests(
    store: EventStore, runs: SchedulerRuns
) -> None:
    store.append([exchange("t1", f"u{n % 3}", n) for n in range(12)])
    store.append([exchange("t2", "x", 12)])
    assert runs.priors_due(5) == [Due("t1", PRIOR_USER_ID, 12, 12)]
    assert runs.priors_due(1, tenant_id="t2") == [Due("t2", PRIOR_USER_ID, 1, 13)]
    # A personal request does not move the prior; the prior's own request does.
    runs.record_requests([_sent("t1", "u0", 12)])
    assert runs.priors_due(5, tenant_id="t1") == [Due("t1", PRIOR_USER_ID, 12, 12)]
    runs.record_requests([_sent("t1", PRIOR_USER_ID, 8)])
    assert runs.priors_due(1, tenant_id="t1") == [Due("t1", PRIOR_USER_ID, 4, 12)]
    # Erased events do not count: u1 had positions 2, 5, 8, 11 (9 and 12 remain new).
    store.forget_user("t1", "u1", actor="admin", reason="asked")
    assert runs.priors_due(1, tenant_id="t1") == [Due("t1", PRIOR_USER_ID, 3, 12)]


def test_head_positions_skip_erased_events(store: EventStore, runs: SchedulerRuns) -> None:
    assert runs.user_head_position("t1", "alice") is None
    assert runs.tenant_head_position("t1") is None
    store.append([exchange("t1", "alice", 0), exchange("t1", "bob", 1), exchange("t1", "alice", 2)])
    store.append([trained("t1", "alice", "r1")])  # not an interaction
    assert runs.user_head_position("t1", "alice") == 3
    assert runs.tenant_head_position("t1") == 3
    store.forget_user("t1", "alice", actor="admin", reason="asked")
    assert runs.user_head_position("t1", "alice") is None
    assert runs.tenant_head_position("t1") == 2


def test_decided_needs_a_decision_covering_the_position(
    store: EventStore, runs: SchedulerRuns
) -> None:
    store.append([exchange("t1", "alice", 0), trained("t1", "alice", "r1"),
                  evaluated("t1", "alice", "r1")])
    assert not runs.decided("t1", "alice", 5)  # evaluated, not decided
    store.append([promoted("t1", "alice", "r1")])
    assert runs.decided("t1", "alice", 10)
    assert not runs.decided("t1", "alice", 11)  # dataset_to is 10
    assert not runs.decided("t1", "bob", 1)


def test_marked_priors_name_served_priors_a_forget_named(
    store: EventStore, runs: SchedulerRuns
) -> None:
    store.append([exchange("t1", "alice", 0), exchange("t1", "bob", 1)])
    prior = trained("t1", PRIOR_USER_ID, "p1", kind="prior")
    prior.data["hyperparameters"] = {"dataset": {"users": ["alice", "bob"]}}
    store.append([prior, evaluated("t1", PRIOR_USER_ID, "p1"),
                  promoted("t1", PRIOR_USER_ID, "p1")])
    assert runs.marked_priors() == []
    store.forget_user("t1", "alice", actor="admin", reason="asked")
    first = runs.marked_priors()
    assert [(m.tenant_id, m.revision_id) for m in first] == [("t1", "p1")]
    store.forget_user("t1", "bob", actor="admin", reason="asked")
    (latest,) = runs.marked_priors("t1")
    assert latest.forgotten_position > first[0].forgotten_position  # the latest tombstone
    assert runs.marked_priors("t2") == []


def test_slots_are_claimed_once_and_only_forward(runs: SchedulerRuns) -> None:
    assert runs.last_slot("nightly") is None
    assert not runs.claim_slot("nightly", T)  # no job row yet
    assert runs.init_job("nightly", T) == T
    assert runs.init_job("nightly", T + timedelta(days=1)) == T  # kept as is
    assert runs.claim_slot("nightly", T + timedelta(days=1))
    assert not runs.claim_slot("nightly", T + timedelta(days=1))  # someone else's now
    assert not runs.claim_slot("nightly", T)  # never backwards
    runs.finish("nightly", 3)
    assert runs.last_slot("nightly") == T + timedelta(days=1)
    assert runs.last_slot("other") is None
