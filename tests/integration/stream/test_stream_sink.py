"""The sink's exactly-once rules, without a broker: the in-memory store plays PostgreSQL
(it obeys the same contract suite) and a list plays the dead-letter topic."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from tessera.events.memory_store import MemoryEventStore
from tessera.events.store import EventStoreError, StoredEvent, Tracking
from tessera.events.stream_sink import IngestSink, Record, SkippedRecords
from tessera.schemas.events import EventEnvelope

from .support import interaction

TOPIC = "t.interactions"
GROUP = "g"


class ListDeadLetters:
    def __init__(self) -> None:
        self.sent: list[tuple[Record, str]] = []

    async def send(self, record: Record, reason: str) -> None:
        self.sent.append((record, reason))


def _value(ev: EventEnvelope) -> bytes:
    return ev.model_dump_json().encode()


def _records(partition: int, events: list[EventEnvelope], first_offset: int = 0) -> list[Record]:
    return [
        Record(TOPIC, partition, first_offset + i, ev.stream_key.encode(), _value(ev))
        for i, ev in enumerate(events)
    ]


def _sink(store: MemoryEventStore) -> tuple[IngestSink, ListDeadLetters]:
    dlq = ListDeadLetters()
    return IngestSink(store=store, group=GROUP, dead_letters=dlq, max_text_chars=100), dlq


def _ids(store: MemoryEventStore) -> list[str]:
    return [str(e.envelope.event_id) for e in store.read()]


def test_a_replayed_batch_stores_nothing_and_is_counted_as_replayed() -> None:
    store = MemoryEventStore()
    sink, _ = _sink(store)
    events = [interaction("alice", n) for n in range(5)]
    batch = _records(0, events)
    asyncio.run(sink.process(batch))
    asyncio.run(sink.process(batch))  # e.g. re-read after a crash before the Kafka commit
    assert _ids(store) == [str(e.event_id) for e in events]
    assert store.max_tracking_offset(GROUP, TOPIC, 0) == 4
    assert (sink.stats.appended, sink.stats.replayed) == (5, 5)

    # A fresh worker (empty offset cache) re-reading an overlapping range: still once.
    fresh, _ = _sink(store)
    more = [interaction("alice", n) for n in range(5, 8)]
    asyncio.run(fresh.process(batch[2:] + _records(0, more, first_offset=5)))
    assert _ids(store) == [str(e.event_id) for e in events + more]
    assert (fresh.stats.appended, fresh.stats.replayed) == (3, 3)


def test_the_same_event_id_from_two_tenants_is_two_events() -> None:
    # Idempotency is per tenant: globex sending acme's event id (by chance, or to erase
    # acme's event) must neither be dropped itself nor displace acme's.
    store = MemoryEventStore()
    sink, dlq = _sink(store)
    acme = interaction("alice", 0)
    globex = interaction("alice", 1, tenant="globex").model_copy(
        update={"event_id": acme.event_id}
    )
    asyncio.run(sink.process(_records(0, [acme])))
    asyncio.run(sink.process(_records(0, [globex, acme], first_offset=1)))
    assert [(e.envelope.tenant_id, e.envelope.data["text"]) for e in store.read()] == [
        ("acme", "alice message 0"),
        ("globex", "alice message 1"),
    ]
    assert sink.stats.appended == 2 and not dlq.sent


def test_a_partition_moved_on_elsewhere_does_not_hide_the_other_partitions_events() -> None:
    store = MemoryEventStore()
    sink, _ = _sink(store)
    alice = [interaction("alice", n) for n in range(3)]
    bob = [interaction("bob", n) for n in range(3)]
    asyncio.run(sink.process(_records(0, alice[:1])))  # the sink now believes p0 is at 0
    # Meanwhile another worker (a zombie after a rebalance) stored more of partition 0,
    # past this batch: a single call with both tracking rows is a replay as a whole.
    store.append(alice[1:], tracking=[Tracking(GROUP, TOPIC, 0, 10)])
    asyncio.run(sink.process(_records(0, alice)[1:] + _records(1, bob)))
    assert sorted(_ids(store)) == sorted(str(e.event_id) for e in alice + bob)
    assert store.max_tracking_offset(GROUP, TOPIC, 1) == 2
    assert store.max_tracking_offset(GROUP, TOPIC, 0) == 10


def test_invalid_records_are_dead_lettered_and_kept_and_do_not_block_the_valid_ones() -> None:
    store = MemoryEventStore()
    sink, dlq = _sink(store)
    good = [interaction("alice", n) for n in range(2)]
    batch = [
        _records(0, good[:1])[0],
        Record(TOPIC, 0, 1, b"acme/alice", b"not json"),
        Record(TOPIC, 0, 2, b"acme/alice", good[1].model_dump_json().encode()),
    ]
    asyncio.run(sink.process(batch))
    assert _ids(store) == [str(e.event_id) for e in good]
    assert [(r.offset, reason.split(":")[0]) for r, reason in dlq.sent] == [(1, "not JSON")]
    (rejected,) = store.read_rejected()
    assert rejected.source == f"kafka:{TOPIC}/0@1"
    assert rejected.payload == "not json"
    assert store.max_tracking_offset(GROUP, TOPIC, 0) == 2


class RefusesBob(MemoryEventStore):
    """A store whose database refuses one user's events (say, a constraint we lack)."""

    def append(
        self, events: Sequence[EventEnvelope], *, tracking: Sequence[Tracking] = ()
    ) -> list[StoredEvent]:
        if any(e.user_id == "bob" for e in events):
            raise EventStoreError("check constraint violated")
        return super().append(events, tracking=tracking)


def test_an_event_the_store_refuses_is_rejected_alone_and_the_rest_land() -> None:
    store = RefusesBob()
    sink, dlq = _sink(store)
    alice = [interaction("alice", n) for n in range(2)]
    bob = interaction("bob", 0)
    asyncio.run(sink.process(_records(0, [alice[0], bob, alice[1]])))
    assert _ids(store) == [str(e.event_id) for e in alice]
    assert [r.offset for r, _ in dlq.sent] == [1]
    assert "refused by the event store" in dlq.sent[0][1]
    assert store.max_tracking_offset(GROUP, TOPIC, 0) == 2
    assert datetime.now(UTC) >= store.read_rejected()[0].received_at


def test_offsets_the_consumer_never_delivered_are_reported_as_a_gap(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = MemoryEventStore()
    sink, _ = _sink(store)
    events = [interaction("alice", n) for n in range(6)]
    asyncio.run(sink.process(_records(0, events[:3])))
    asyncio.run(sink.process(_records(0, events[3:4], first_offset=3)))  # contiguous
    assert sink.stats.gaps == 0
    with caplog.at_level(logging.WARNING, logger="tessera.events.stream_sink"):
        asyncio.run(sink.process(_records(0, events[4:], first_offset=9)))  # 4..8 skipped
    assert sink.stats.gaps == 1
    assert "offsets 4..8 of t.interactions/0 were never delivered" in caplog.text
    assert store.max_tracking_offset(GROUP, TOPIC, 0) == 10


def test_records_skipped_while_the_broker_still_has_them_stop_the_batch() -> None:
    # A fresh topic incarnation (nothing stored) whose first delivered record is offset 9:
    # the consumer was sent past records 0..8 (offsets an earlier incarnation committed).
    store = MemoryEventStore()
    sink, _ = _sink(store)
    sink.log_start = lambda topic, partition: 0
    events = [interaction("alice", n) for n in range(3)]
    with pytest.raises(SkippedRecords, match=r"offsets 0\.\.8 of t\.interactions/0"):
        asyncio.run(sink.process(_records(0, events, first_offset=9)))
    assert _ids(store) == []  # nothing stepped over: the worker re-reads after a restart
    # Records the broker no longer holds (retention) are not a skip: read on.
    sink.log_start = lambda topic, partition: 9
    asyncio.run(sink.process(_records(0, events, first_offset=9)))
    assert _ids(store) == [str(e.event_id) for e in events]
