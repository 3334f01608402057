"""The ingest sink: a batch of Kafka records in, events durably in the log, exactly once.

The batch's valid events and, for each partition in it, a tracking row holding the
highest offset read go to the store in ONE `append` call (one transaction), so the log
and the consumer position can never disagree. The caller (the faust agent)
acks the records only after `process` returns, so a Kafka offset is committed only
after PostgreSQL has committed. After a crash the records since the last Kafka commit
come again: those at or below the stored tracking offset are skipped here, and a
duplicate `event_id` is a no-op in the store.

Nothing a producer sends can stop this loop: invalid records go to the dead-letter
topic and to `rejected_inputs`; a database outage is waited out with backoff.

The store is synchronous (psycopg); its calls run in a worker thread so the event loop
keeps the consumer group's heartbeats going while PostgreSQL is slow or down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import ParamSpec, Protocol, TypeVar

from tessera.events.store import (
    EventStore,
    EventStoreError,
    RejectedInput,
    Tracking,
    TransientStoreError,
)
from tessera.events.stream_validate import Invalid, validate_record
from tessera.schemas.events import EventEnvelope

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Record:
    """One Kafka record as the sink needs it (decoupled from the client library)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    @property
    def source(self) -> str:
        return f"kafka:{self.topic}/{self.partition}@{self.offset}"


class SkippedRecords(RuntimeError):
    """The consumer skipped records the broker still holds: the worker must re-read them
    (restart; its start-up check moves committed offsets back to the log's)."""


class DeadLetters(Protocol):
    """Where invalid records go, with their reason (the `.dlq` topic in production)."""

    async def send(self, record: Record, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff for transient store errors; retries forever (a worker must
    outlive a database restart), logging each failure."""

    first_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0

    def delays(self) -> Iterator[float]:
        """first_s, first_s * factor, ... capped at max_s, without end."""
        delay = self.first_s
        while True:
            yield delay
            delay = min(self.max_s, delay * self.factor)


@dataclass
class SinkStats:
    """Counters since start (logged by the worker, read by tests and benchmarks)."""

    appended: int = 0
    duplicates: int = 0
    rejected: int = 0
    replayed: int = 0  # records at or below the stored tracking offset, skipped
    retries: int = 0
    batches: int = 0
    gaps: int = 0  # times a partition's next record was not the one after the stored one


@dataclass
class IngestSink:
    """Validates and appends batches of records for one consumer group."""

    store: EventStore
    group: str
    dead_letters: DeadLetters
    max_text_chars: int
    # topic name -> the name its tracking rows use. The worker appends the topic's id, so
    # that a topic created anew (offsets from 0 again; a Tansu restart does this) is not
    # mistaken for a replay of the old one and silently skipped.
    tracking_topics: dict[str, str] = field(default_factory=dict)
    backoff: Backoff = field(default_factory=Backoff)
    stats: SinkStats = field(default_factory=SinkStats)
    # (topic, partition) -> the broker's first offset still held (blocking; run in a
    # thread, only when a batch does not start where the log left off). Without it a gap
    # is only logged.
    log_start: Callable[[str, int], int] | None = None
    # (topic, partition) -> highest offset known to be in the log. Only ever set after
    # the store committed, so it can be stale-low (harmless) but never too high.
    _stored: dict[tuple[str, int], int] = field(default_factory=dict)

    def forget_positions(self) -> None:
        """Drop cached offsets (on rebalance: another worker may have moved them on)."""
        self._stored.clear()

    async def process(self, records: Sequence[Record]) -> None:
        """Make every record durable (as an event or as a rejection). Returns only when
        that is done; retries transient store errors for as long as it takes."""
        slices = await self._fresh_slices(records)
        if not slices:
            self.stats.batches += 1
            return
        checked = [_validate(s, self.max_text_chars) for s in slices]
        # Rejections are written before the tracking rows: a crash in between replays
        # them (a duplicate rejection row), never loses them.
        await self._reject([bad for c in checked for bad in c.invalid])
        envelopes = [env for c in checked for _, env in c.valid]
        tracking = [c.tracking(self.group) for c in checked]
        try:
            # Fast path: the whole batch, every partition's tracking row, one transaction.
            stored = await self._retrying(self.store.append, envelopes, tracking=tracking)
        except EventStoreError as exc:
            log.warning("batch append failed (%s); retrying partition by partition", exc)
            self._count(len(envelopes), await self._append_partitions(checked))
        else:
            if len(stored) < len(envelopes):
                # Duplicates, or a replay: the store skips a WHOLE call when any of its
                # tracking rows is not newer (possible if another worker moved a
                # partition on meanwhile), which would also skip the other partitions'
                # new events. Per-partition calls are exact either way: a partition
                # already stored is now a no-op replay.
                stored_more = await self._append_partitions(checked)
                self._count(len(envelopes), len(stored) + stored_more)
            else:
                self._count(len(envelopes), len(stored))
        for c in checked:
            self._stored[(c.topic, c.partition)] = c.records[-1].offset
        self.stats.batches += 1

    async def _fresh_slices(self, records: Sequence[Record]) -> list[_Slice]:
        """The batch per partition, in offset order, without records already in the log."""
        by_partition: dict[tuple[str, int], list[Record]] = {}
        for rec in records:
            by_partition.setdefault((rec.topic, rec.partition), []).append(rec)
        slices = []
        for (topic, partition), recs in by_partition.items():
            stored = await self._stored_offset(self._tracked(topic), partition)
            # Kafka delivers a partition in offset order; sort anyway, order is the contract.
            fresh = sorted(
                (r for r in recs if stored is None or r.offset > stored), key=lambda r: r.offset
            )
            self.stats.replayed += len(recs) - len(fresh)
            expected = 0 if stored is None else stored + 1
            if fresh and fresh[0].offset > expected:
                await self._check_gap(topic, partition, expected, fresh[0].offset)
            if fresh:
                slices.append(_Slice(self._tracked(topic), partition, fresh))
        return slices

    async def _check_gap(self, topic: str, partition: int, expected: int, first: int) -> None:
        """Records from `expected` to `first` - 1 were not delivered. Nothing here writes
        offset gaps (no transactions, no compaction), so unless the broker no longer
        has them (its log starts later: retention) the consumer skipped them — seen when
        offsets committed by an earlier incarnation of the topic led the new one — and
        storing this batch would step over them for good: `SkippedRecords`."""
        if self.log_start is None:
            self.stats.gaps += 1
            log.warning(
                "offsets %d..%d of %s/%d were never delivered; reading on from %d",
                expected, first - 1, topic, partition, first,
            )
            return
        start = max(expected, await asyncio.to_thread(self.log_start, topic, partition))
        if first <= start:
            return  # the broker's log starts at `first`: nothing was skipped
        self.stats.gaps += 1
        raise SkippedRecords(
            f"offsets {start}..{first - 1} of {topic}/{partition} are on the broker but were "
            "never delivered"
        )

    async def _append_partitions(self, checked: list[_Checked]) -> int:
        """One append per partition; a permanent error there narrows down to single events."""
        appended = 0
        for c in checked:
            envelopes = [env for _, env in c.valid]
            try:
                new = await self._retrying(
                    self.store.append, envelopes, tracking=[c.tracking(self.group)]
                )
            except EventStoreError as exc:
                log.warning(
                    "append to %s/%d failed (%s); appending singly", c.topic, c.partition, exc
                )
                appended += await self._append_singly(c.topic, c.partition, c.valid)
                await self._retrying(self.store.append, [], tracking=[c.tracking(self.group)])
            else:
                appended += len(new)
        return appended

    def _tracked(self, topic: str) -> str:
        return self.tracking_topics.get(topic, topic)

    def _count(self, sent: int, stored: int) -> None:
        self.stats.appended += stored
        self.stats.duplicates += sent - stored

    async def _append_singly(
        self, topic: str, partition: int, valid: list[tuple[Record, EventEnvelope]]
    ) -> int:
        appended = 0
        for rec, env in valid:
            tracking = Tracking(self.group, topic, partition, rec.offset)
            try:
                new = await self._retrying(self.store.append, [env], tracking=[tracking])
            except EventStoreError as exc:
                reason = f"refused by the event store: {exc}"
                refused = Invalid(reason, tenant_id=env.tenant_id, user_id=env.user_id)
                await self._reject([(rec, refused)])
                continue
            appended += len(new)
        return appended

    async def _reject(self, invalid: list[tuple[Record, Invalid]]) -> None:
        if not invalid:
            return
        for rec, why in invalid:
            await self.dead_letters.send(rec, why.reason)
        now = datetime.now(UTC)
        rows = [
            RejectedInput(
                source=rec.source,
                reason=why.reason,
                payload=_as_text(rec.value),  # the store cuts huge ones
                received_at=now,
                tenant_id=why.tenant_id,
                user_id=why.user_id,
            )
            for rec, why in invalid
        ]
        await self._retrying(self.store.record_rejected, rows)
        self.stats.rejected += len(rows)
        for rec, why in invalid:
            log.info("rejected %s: %s", rec.source, why.reason)

    async def _stored_offset(self, topic: str, partition: int) -> int | None:
        key = (topic, partition)
        if key not in self._stored:
            offset = await self._retrying(
                self.store.max_tracking_offset, self.group, topic, partition
            )
            if offset is None:
                return None
            self._stored[key] = offset
        return self._stored[key]

    async def _retrying(self, call: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking store call in a thread; retry it while the error is transient."""
        delays = self.backoff.delays()
        while True:
            try:
                return await asyncio.to_thread(call, *args, **kwargs)
            except TransientStoreError as exc:
                wait = next(delays)
                self.stats.retries += 1
                log.warning("event store unavailable (%s); retrying in %.1fs", exc, wait)
                await asyncio.sleep(wait)


@dataclass(frozen=True, slots=True)
class _Slice:
    """The new records of one partition in a batch, in offset order (never empty)."""

    topic: str  # as named in tracking rows (see IngestSink.tracking_topics)
    partition: int
    records: list[Record]


@dataclass(frozen=True, slots=True)
class _Checked:
    topic: str
    partition: int
    records: list[Record]
    valid: list[tuple[Record, EventEnvelope]]
    invalid: list[tuple[Record, Invalid]]

    def tracking(self, group: str) -> Tracking:
        # The highest offset read, valid or not: rejected records are done with too.
        return Tracking(group, self.topic, self.partition, self.records[-1].offset)


def _validate(part: _Slice, max_text_chars: int) -> _Checked:
    valid: list[tuple[Record, EventEnvelope]] = []
    invalid: list[tuple[Record, Invalid]] = []
    for rec in part.records:
        result = validate_record(rec.value, max_text_chars=max_text_chars)
        if isinstance(result, Invalid):
            invalid.append((rec, result))
        else:
            valid.append((rec, result))
    return _Checked(part.topic, part.partition, part.records, valid, invalid)


def _as_text(value: bytes | None) -> str:
    if value is None:
        return ""
    # Undecodable bytes are kept visible (U+FFFD) rather than dropped; NUL cannot be
    # stored in PostgreSQL text, so it is spelled out.
    return value.decode("utf-8", errors="replace").replace("\x00", "\\u0000")
