"""A liveness watchdog for the ingest stream worker: exit when the group stops consuming.

Seen in the soak run: after repeated restarts of the embedded broker a faust worker can
stay up, connected and quiet while records wait on the topic (its consumer never gets
its partitions back). Nothing crashes, so nothing restarts it. The watchdog turns that
silent stall into an exit, which any supervisor (systemd, Kubernetes, `tessera bench
soak`'s) answers with a restart; a restart is always safe, the tracking rows make the
re-read records no-ops.

The test, every `interval_s`: is there a partition whose end offset lies beyond what the
log has stored for it (the tracking rows), while no tracking row of the group has moved
for `stall_s`? Both sides are read fresh, not from the worker's own state, which is
what a stalled worker gets wrong. Tansu reports end offsets too low after multi-record
batches (ARCHITECTURE.md), never too high, so a lag it shows is real; when the broker or
the database cannot be read, the check is skipped (an outage is not a stall).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE

log = logging.getLogger(__name__)

# partition -> the next offset the broker will hand out (its end offset)
EndOffsets = Mapping[int, int]
# partition -> the highest offset the log has stored (absent: none yet)
StoredOffsets = Mapping[int, int]


@dataclass
class StallDetector:
    """Decides from successive readings whether a partition has stalled: records wait
    beyond its stored offset, and that offset has not moved for `stall_s`. Per
    partition, because a healthy worker moving its own partitions must not hide another
    member's stalled ones (any member that sees a stall exits; a healthy one that does
    so only costs a rebalance)."""

    stall_s: float
    clock: Callable[[], float] = time.monotonic
    # partition -> (its stored offset when last seen, since when it has been that and behind)
    _seen: dict[int, tuple[int, float]] = field(default_factory=dict, init=False)

    def observe(self, end: EndOffsets, stored: StoredOffsets) -> list[int]:
        """Record one reading; the partitions stalled for `stall_s` (then the worker
        should exit)."""
        now = self.clock()
        stalled: list[int] = []
        for partition, end_offset in end.items():
            offset = stored.get(partition, -1)
            previous = self._seen.get(partition)
            behind = end_offset - 1 > offset
            if not behind or previous is None or previous[0] != offset:
                self._seen[partition] = (offset, now)
            elif now - previous[1] >= self.stall_s:
                stalled.append(partition)
        if stalled:
            log.critical(
                "ingest stalled: partitions %s hold records beyond what the log stored, and "
                "their stored offsets have not moved for %.0f s; exiting so that the "
                "supervisor restarts the worker",
                stalled,
                self.stall_s,
            )
        return stalled


@contextmanager
def _side_consumer(bootstrap: str) -> Iterator[Any]:
    """A groupless consumer on a connection of its own (not the worker's consumer, which
    is the part under suspicion), for reading offsets."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        **NO_AUTO_CREATE,
        bootstrap_servers=bootstrap,
        client_id="tessera-ingest-watchdog",
        request_timeout_ms=10_000,
    )
    try:
        yield consumer
    finally:
        consumer.close()


def kafka_end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    """The topic's end offsets."""
    from kafka import TopicPartition

    with _side_consumer(bootstrap) as consumer:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: int(offset) for tp, offset in ends.items()}


def kafka_log_start(bootstrap: str, topic: str, partition: int) -> int:
    """The first offset the broker still holds for `topic`/`partition`."""
    from kafka import TopicPartition

    tp = TopicPartition(topic, partition)
    with _side_consumer(bootstrap) as consumer:
        return int(consumer.beginning_offsets([tp])[tp])


def reconcile_committed_offsets(
    bootstrap: str,
    topic: str,
    group: str,
    stored_offset: Callable[[int], int | None],
    *,
    commit_timeout_s: float = 30.0,
) -> dict[int, int]:
    """Move the group's committed offsets back wherever they lead what the log stored.

    The contract is that Kafka offsets trail PostgreSQL (committed only after the log
    committed). One case breaks it: a worker that outlives a restart of the in-memory
    broker commits its old incarnation's offsets into the new, shorter topic, and a
    restarted consumer then seeks past every new record and waits forever (the stall the
    watchdog above turns into an exit). Run at worker start, before the group is
    joined, this restores the contract: committed = the stored offset + 1 (0 when the
    log holds nothing of this incarnation). Returns {partition: new offset} for the
    partitions it moved."""
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(
        **NO_AUTO_CREATE,
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id="tessera-ingest-reconcile",
        enable_auto_commit=False,
        request_timeout_ms=10_000,
    )
    try:
        fixes: dict[TopicPartition, OffsetAndMetadata] = {}
        for partition in sorted(consumer.partitions_for_topic(topic) or ()):
            tp = TopicPartition(topic, partition)
            committed = consumer.committed(tp)
            stored = stored_offset(partition)
            trailing = 0 if stored is None else stored + 1
            if committed is not None and committed > trailing:
                fixes[tp] = OffsetAndMetadata(trailing, "", -1)
        if fixes:
            _commit_when_group_is_free(consumer, fixes, timeout_s=commit_timeout_s)
            log.warning(
                "committed offsets of group %s led the log (left by an earlier incarnation of "
                "%s); moved back to %s",
                group,
                topic,
                {tp.partition: o.offset for tp, o in fixes.items()},
            )
        return {tp.partition: o.offset for tp, o in fixes.items()}
    finally:
        consumer.close()


def _commit_when_group_is_free(
    consumer: Any, fixes: Mapping[Any, Any], *, timeout_s: float
) -> None:
    """Commit from outside the group. The broker refuses that while the group lists a
    member (UnknownMemberId): after a crash, the dead worker's member until its session
    times out (seconds). So retry until then; the last error propagates."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            consumer.commit(dict(fixes))
            return
        except KafkaError as exc:  # CommitFailedError included
            if time.monotonic() > deadline:
                raise
            log.info("the group still has members (%s); retrying the offset fix", exc)
            time.sleep(1.0)
