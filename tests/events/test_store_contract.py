"""One contract, two stores: every test runs on MemoryEventStore and PostgresEventStore."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tessera.events.projections import ProjectionError
from tessera.events.store import (
    MAX_REJECTED_PAYLOAD_CHARS,
    EventStore,
    RejectedInput,
    RequestRecord,
    Tracking,
    UnstorableEventError,
)
from tessera.schemas.events import EventType

from .factories import evaluated, exchange


def test_positions_and_per_user_versions(store: EventStore) -> None:
    batch = [exchange("t1", "alice", 0), exchange("t1", "bob", 1), exchange("t1", "alice", 2)]
    stored = store.append(batch)
    assert [s.position for s in stored] == [1, 2, 3]
    assert [s.stream_version for s in stored] == [1, 1, 2]
    assert [s.envelope.event_id for s in stored] == [e.event_id for e in batch]
    assert all(s.envelope.recorded_at is not None for s in stored)
    more = store.append([exchange("t1", "alice", 3), exchange("t2", "alice", 4)])
    assert [(s.position, s.stream_version) for s in more] == [(4, 3), (5, 1)]
    assert store.head_position() == 5


def test_duplicate_event_ids_are_skipped(store: EventStore) -> None:
    first = exchange("t1", "alice", 0)
    assert len(store.append([first, first])) == 1  # duplicate inside one batch
    again = store.append([first, exchange("t1", "alice", 1)])
    assert [s.stream_version for s in again] == [2]  # only the new one, next version
    assert store.append([first]) == []
    assert store.head_position() == 2
    assert [s.envelope.event_id for s in store.read()].count(first.event_id) == 1


def test_event_ids_are_unique_per_tenant_not_across_tenants(store: EventStore) -> None:
    # Tenant t2 reusing an id t1 chose (by chance or to erase t1's event) must neither
    # be dropped itself nor displace t1's: idempotency is per tenant.
    mine = exchange("t1", "alice", 0)
    theirs = exchange("t2", "alice", 1, event_id=mine.event_id)
    assert len(store.append([mine])) == 1
    assert [s.envelope.tenant_id for s in store.append([theirs])] == ["t2"]
    # The same id twice in one batch, once per tenant: both stored.
    shared = exchange("t1", "bob", 2)
    both = store.append([shared, exchange("t2", "bob", 3, event_id=shared.event_id)])
    assert [s.envelope.tenant_id for s in both] == ["t1", "t2"]
    # Each tenant's retry is still a no-op, and each tenant reads its own event.
    assert store.append([mine, theirs, shared]) == []
    for tenant, prompt in (("t1", "secret prompt alice 0"), ("t2", "secret prompt alice 1")):
        rows = [s for s in store.read(tenant_id=tenant) if s.envelope.event_id == mine.event_id]
        assert [s.envelope.data["prompt"] for s in rows] == [prompt]
    assert store.head_position() == 4


def test_tracking_makes_replays_no_ops(store: EventStore) -> None:
    t = Tracking("ingest", "tessera.interactions", 3, 41)
    assert len(store.append([exchange("t1", "u", 0)], tracking=[t])) == 1
    assert store.max_tracking_offset("ingest", "tessera.interactions", 3) == 41
    # Same offset again with different events (a redelivered, re-parsed batch): nothing.
    assert store.append([exchange("t1", "u", 1)], tracking=[t]) == []
    assert (
        store.append(
            [exchange("t1", "u", 1)], tracking=[Tracking("ingest", "tessera.interactions", 3, 40)]
        )
        == []
    )
    assert store.head_position() == 1
    # Newer offset: stored, tracking advances; other partitions and groups are separate.
    assert (
        len(
            store.append(
                [exchange("t1", "u", 2)],
                tracking=[Tracking("ingest", "tessera.interactions", 3, 42)],
            )
        )
        == 1
    )
    assert (
        len(
            store.append(
                [exchange("t1", "u", 3)],
                tracking=[Tracking("ingest", "tessera.interactions", 4, 0)],
            )
        )
        == 1
    )
    assert store.max_tracking_offset("ingest", "tessera.interactions", 3) == 42
    assert store.max_tracking_offset("ingest", "tessera.interactions", 4) == 0
    assert store.max_tracking_offset("other", "tessera.interactions", 3) is None


def test_tracking_rows_list_every_position(store: EventStore) -> None:
    assert store.tracking_rows() == []
    store.append([], tracking=[Tracking("g", "b", 1, 5), Tracking("g", "a", 0, 3)])
    store.append([], tracking=[Tracking("f", "a", 0, 9), Tracking("g", "a", 0, 4)])
    assert store.tracking_rows() == [
        Tracking("f", "a", 0, 9), Tracking("g", "a", 0, 4), Tracking("g", "b", 1, 5)
    ]


def test_one_stale_partition_makes_the_whole_call_a_replay(store: EventStore) -> None:
    store.append([], tracking=[Tracking("g", "t", 0, 10)])
    fresh, stale = Tracking("g", "t", 1, 5), Tracking("g", "t", 0, 10)
    assert store.append([exchange("t1", "u", 0)], tracking=[fresh, stale]) == []
    assert store.max_tracking_offset("g", "t", 1) is None
    assert store.head_position() == 0


def test_tracking_alone_advances_offsets(store: EventStore) -> None:
    # A batch whose records were all rejected still moves the consumer forward.
    assert store.append([], tracking=[Tracking("g", "t", 0, 7)]) == []
    assert store.max_tracking_offset("g", "t", 0) == 7


def test_read_filters_and_order(store: EventStore) -> None:
    events = [exchange("t1" if i % 2 else "t2", f"u{i % 3}", i) for i in range(12)]
    store.append(events[:5])
    store.append(events[5:])
    everything = store.read()
    assert [s.position for s in everything] == list(range(1, 13))
    assert [s.envelope.event_id for s in everything] == [e.event_id for e in events]
    assert [s.position for s in store.read(after=3, upto=7)] == [4, 5, 6, 7]
    assert [s.position for s in store.read(after=2, limit=3)] == [3, 4, 5]
    t1_u1 = store.read(tenant_id="t1", user_id="u1")
    assert t1_u1 and all((s.envelope.tenant_id, s.envelope.user_id) == ("t1", "u1") for s in t1_u1)
    assert [s.stream_version for s in t1_u1] == list(range(1, len(t1_u1) + 1))
    assert store.read(event_types=[EventType.FEEDBACK]) == []
    assert len(store.read(event_types=[EventType.EXCHANGE, EventType.FEEDBACK])) == 12
    first = everything[0].envelope
    assert first.data == events[0].data
    assert first.occurred_at == events[0].occurred_at


def test_projection_error_refuses_the_whole_append(store: EventStore) -> None:
    with pytest.raises(ProjectionError, match="not a revision of t1/alice"):
        store.append(
            [exchange("t1", "alice", 0), evaluated("t1", "alice", "r-missing")],
            tracking=[Tracking("g", "t", 0, 1)],
        )
    assert store.head_position() == 0
    assert store.max_tracking_offset("g", "t", 0) is None
    assert store.get_user("t1", "alice") is None
    assert len(store.append([exchange("t1", "alice", 0)])) == 1  # the store still works


def test_users_projection_counts_interactions(store: EventStore) -> None:
    store.append([exchange("t1", "alice", i) for i in range(3)] + [exchange("t1", "bob", 9)])
    alice = store.get_user("t1", "alice")
    assert alice is not None
    assert (alice.interactions, alice.first_position, alice.last_position) == (3, 1, 3)
    assert [u.user_id for u in store.list_users("t1")] == ["alice", "bob"]
    assert store.list_users("t2") == []


def test_rejected_inputs_are_kept_with_reason(store: EventStore) -> None:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    store.record_rejected(
        [
            RejectedInput(
                "kafka:tessera.interactions/0@5", "data.prompt: field required", "{bad", at
            ),
            RejectedInput(
                "http", "too long", "x" * (MAX_REJECTED_PAYLOAD_CHARS + 10), at, "t1", "u"
            ),
            RejectedInput("http", "NUL in \x00 reason", "raw \x00 bytes", at),
        ]
    )
    got = store.read_rejected()
    assert [(r.source, r.reason) for r in got][:2] == [
        ("kafka:tessera.interactions/0@5", "data.prompt: field required"),
        ("http", "too long"),
    ]
    assert got[0].payload == "{bad" and got[0].received_at == at
    assert got[1].payload.endswith(f"[truncated {MAX_REJECTED_PAYLOAD_CHARS + 10} chars]")
    assert (got[1].tenant_id, got[1].user_id) == ("t1", "u")
    assert store.read_rejected(limit=1) == got[:1]
    # PostgreSQL text cannot hold NUL: shown as U+FFFD rather than failing the worker.
    assert (got[2].reason, got[2].payload) == ("NUL in \ufffd reason", "raw \ufffd bytes")


def test_request_log_keeps_first_record(store: EventStore) -> None:
    at = datetime(2026, 1, 3, tzinfo=UTC)
    rec = RequestRecord("req-1", "t1", "alice", "r1", "digest-r1", "personal", at)
    store.record_requests([rec])
    store.record_requests([RequestRecord("req-1", "t1", "alice", None, None, "base", at)])
    assert store.get_request("req-1") == rec
    assert store.get_request("req-2") is None


def test_nul_characters_are_refused_before_writing(store: EventStore) -> None:
    bad = exchange("t1", "u", 1).model_copy(update={"data": {"prompt": "a\x00b", "response": "r"}})
    odd_but_fine = exchange("t1", "u", 2).model_copy(update={"data": {"prompt": "a\\u0000b"}})
    with pytest.raises(UnstorableEventError, match=str(bad.event_id)):
        store.append([exchange("t1", "u", 0), bad], tracking=[Tracking("g", "t", 0, 1)])
    assert store.head_position() == 0
    assert store.max_tracking_offset("g", "t", 0) is None
    bad_type = exchange("t1", "u", 3).model_copy(update={"event_type": "interaction\x00"})
    with pytest.raises(UnstorableEventError, match=str(bad_type.event_id)):
        store.append([bad_type])
    assert len(store.append([odd_but_fine])) == 1
    assert store.read()[0].envelope.data == {"prompt": "a\\u0000b"}
