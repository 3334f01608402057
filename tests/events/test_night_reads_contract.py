"""NightReads: one contract, run on PostgreSQL and on the in-memory twin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tessera.events.memory_store import MemoryEventStore
from tessera.events.night_reads import MemoryNightReads, NightReads, PostgresNightReads
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import EventStore
from tessera.schemas.events import PRIOR_USER_ID

from .factories import evaluated, promoted, trained


@pytest.fixture()
def reads(store: EventStore) -> Iterator[NightReads]:
    if isinstance(store, PostgresEventStore):
        yield PostgresNightReads(store.url)
    else:
        assert isinstance(store, MemoryEventStore)
        yield MemoryNightReads(store)


def test_last_revision_times_per_personal_stream(store: EventStore, reads: NightReads) -> None:
    assert reads.last_revision_times() == {}
    store.append([trained("t1", "alice", "a1")])
    store.append([trained("t1", "alice", "a2"), trained("t1", "bob", "b1"),
                  trained("t2", "carol", "c1"), trained("t1", PRIOR_USER_ID, "p1", kind="prior")])
    times = reads.last_revision_times()
    assert set(times) == {("t1", "alice"), ("t1", "bob"), ("t2", "carol")}  # no prior
    rows = {r.revision_id: r for r in store.list_revisions("t1", "alice")}
    assert times[("t1", "alice")] == max(rows["a1"].trained_at, rows["a2"].trained_at)
    assert set(reads.last_revision_times("t2")) == {("t2", "carol")}


def test_prior_heads_name_each_tenants_served_prior(store: EventStore, reads: NightReads) -> None:
    store.append([trained("t1", PRIOR_USER_ID, "p1", kind="prior"),
                  trained("t2", PRIOR_USER_ID, "q1", kind="prior")])
    assert reads.prior_heads() == {}  # trained is not served
    store.append([evaluated("t1", PRIOR_USER_ID, "p1"), promoted("t1", PRIOR_USER_ID, "p1"),
                  trained("t1", "alice", "a1"), evaluated("t1", "alice", "a1"),
                  promoted("t1", "alice", "a1")])
    assert reads.prior_heads() == {"t1": "p1"}
    assert reads.prior_heads("t2") == {}
