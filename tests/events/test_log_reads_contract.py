"""LogReads: one contract, run on PostgreSQL and on the in-memory twin."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tessera.events.log_reads import LogReads, MemoryLogReads, PostgresLogReads
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import EventStore, RejectedInput

from .factories import exchange, trained


@pytest.fixture()
def reads(store: EventStore) -> Iterator[LogReads]:
    log = PostgresLogReads(store.url) if isinstance(store, PostgresEventStore) else None
    yield log or MemoryLogReads(store)
    if log is not None:
        log.close()


def test_present_finds_keys_per_tenant(store: EventStore, reads: LogReads) -> None:
    a, b = exchange("t1", "alice", 0), exchange("t2", "bob", 1)
    store.append([a, b])
    unknown = uuid.uuid4()
    asked = [("t1", a.event_id), ("t2", b.event_id), ("t1", unknown),
             ("t2", a.event_id)]  # t1's id asked of t2: another tenant's event is not it
    assert reads.present(asked) == {("t1", a.event_id), ("t2", b.event_id)}
    assert reads.present([]) == set()


def test_counts_of_a_tenant(store: EventStore, reads: LogReads) -> None:
    empty = reads.tenant_counts("t1")
    assert (empty.events_by_type, empty.users, empty.first_position, empty.last_position,
            empty.longest_stream) == ({}, 0, None, None, 0)
    store.append([exchange("t2", "x", 0)])
    store.append([exchange("t1", "alice", n) for n in range(3)])
    store.append([exchange("t1", "bob", 3), trained("t1", "alice", "r1")])
    store.record_rejected([RejectedInput("http", "bad", "{}", datetime.now(UTC))])
    assert reads.count_events("t1") == 5
    assert reads.count_events("t3") == 0
    counts = reads.tenant_counts("t1")
    assert counts.events_by_type == {"interaction.exchange": 4, "revision.trained": 1}
    assert (counts.users, counts.first_position, counts.last_position) == (2, 2, 6)
    assert counts.longest_stream == 4  # alice: three exchanges and a revision
    assert counts.rejected_inputs == 1


def test_counts_by_event_type(store: EventStore, reads: LogReads) -> None:
    store.append([exchange("t1", "alice", 0), trained("t1", "alice", "r1")])
    assert reads.count_events("t1", event_types=["interaction.exchange"]) == 1
    assert reads.count_events("t1", event_types=["interaction.exchange", "revision.trained"]) == 2
    assert reads.count_events("t1", event_types=[]) == 0


def test_data_values_find_markers_by_prefix(store: EventStore, reads: LogReads) -> None:
    texts = ["soak-1 a", "soak-2 b", "probe-x", "soak_3", "soak%4"]
    store.append([exchange("t1", "u", n, event_id=uuid.uuid4()) for n in range(1)])
    store.append([
        exchange("t1" if n < 4 else "t2", "u", n).model_copy(update={"data": {"text": t}})
        for n, t in enumerate(texts)
    ])
    assert reads.data_values("text", prefix="soak-") == ["soak-1 a", "soak-2 b"]
    assert reads.data_values("text", prefix="soak-", tenant_id="t2") == []
    assert reads.data_values("text", prefix="soak%", tenant_id="t2") == ["soak%4"]
    assert reads.data_values("text", prefix="soak_") == ["soak_3"]  # '_' is no wildcard
    assert reads.data_values("text", prefix="probe-x", tenant_id="t1") == ["probe-x"]
    assert reads.data_values("prompt", prefix="secret prompt u 0") == ["secret prompt u 0"]


def test_positions_tail_a_tenant(store: EventStore, reads: LogReads) -> None:
    batch = [exchange("t1", "a", 0), exchange("t2", "b", 1), exchange("t1", "c", 2)]
    store.append(batch)
    assert reads.positions("t1", after=0) == [(1, batch[0].event_id), (3, batch[2].event_id)]
    assert reads.positions("t1", after=1) == [(3, batch[2].event_id)]
    assert reads.positions("t1", after=3) == []
