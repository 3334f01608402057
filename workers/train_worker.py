"""`tessera worker train`: a Kafka consumer group sharing the training requests.

Each member takes one message at a time from `tessera.training-requests` (a request for
one user, or a night's group of users trained together), hands it to a handler (the
revision pipeline) and commits the record's offset only after the handler returned, i.e.
after every outcome is committed in PostgreSQL. A member killed mid-training never
commits, so after the group rebalances (or the member restarts) the same message is
handled again; the pipeline's idempotency (one revision per `(user, up_to_position)`,
deterministic event ids, recorded candidates resumed rather than retrained) makes the
retry produce exactly one revision per user, in a group as alone.

Broker limits (Tansu): group joins are slow, so the session timeout is ~6 s with a 1 s
heartbeat. kafka-python heartbeats from a background thread, so a long training does not
cost the membership; `max_poll_interval_ms` is set above the longest training we expect.
The price: a member joining while another is mid-training waits for that training to
end before the group settles (a rebalance needs every live member to poll again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata
from pydantic import ValidationError

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE
from tessera.workers import metrics
from tessera.workers.training_request import (
    TrainingGroup,
    TrainingMessage,
    decode_message,
)

log = logging.getLogger(__name__)

# The handler returns the outcome label: "promoted", "rejected", "skipped" (it counts its
# own outcomes in `metrics`; the worker counts only requests it gives up on).
Handler = Callable[[TrainingMessage], str]


@dataclass(frozen=True)
class WorkerConfig:
    """How one member of the trainer group talks to the broker."""

    bootstrap: str
    topic: str
    group_id: str = "tessera-trainers"
    client_id: str = "tessera-trainer"
    session_timeout_ms: int = 6_000
    heartbeat_interval_ms: int = 1_000
    # Longest time between two polls before the broker evicts us: above any training run.
    max_poll_interval_ms: int = 6 * 3600 * 1000
    poll_timeout_ms: int = 500
    max_attempts: int = 3  # a request that fails this often is logged and skipped
    retry_backoff_s: float = 2.0
    queue_depth_every_s: float = 10.0


class _LogAssignments(ConsumerRebalanceListener):  # type: ignore[misc]
    """Logs each rebalance's outcome: which partitions this member now owns."""

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        log.info("partitions revoked: %s", sorted(tp.partition for tp in revoked))

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("partitions assigned: %s", sorted(tp.partition for tp in assigned),
                 extra={"assigned": len(assigned)})


class TrainWorker:
    """One member of the trainer consumer group. `run()` blocks until `stop()`."""

    def __init__(self, config: WorkerConfig, handler: Handler) -> None:
        self._config = config
        self._handler = handler
        self._stop = threading.Event()
        self._last_depth = 0.0
        try:
            self._consumer = KafkaConsumer(
                **NO_AUTO_CREATE,
                bootstrap_servers=config.bootstrap,
                group_id=config.group_id,
                client_id=config.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=1,
                session_timeout_ms=config.session_timeout_ms,
                heartbeat_interval_ms=config.heartbeat_interval_ms,
                max_poll_interval_ms=config.max_poll_interval_ms,
                request_timeout_ms=max(30_000, config.session_timeout_ms + 5_000),
            )
            self._consumer.subscribe([config.topic], listener=_LogAssignments())
        except KafkaError as exc:
            raise RuntimeError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from exc

    def stop(self) -> None:
        """Ask `run()` to return after the request in hand (thread- and signal-safe)."""
        self._stop.set()

    def run(self, *, max_requests: int | None = None) -> int:
        """Consume until stopped (or `max_requests` handled); returns requests handled."""
        handled = 0
        try:
            while not self._stop.is_set():
                batch = self._consumer.poll(timeout_ms=self._config.poll_timeout_ms)
                for tp, records in batch.items():
                    for record in records:
                        if self._process(tp, record):
                            handled += 1
                        else:
                            break  # partition was rewound; re-poll before going on
                self._update_queue_depth()
                if max_requests is not None and handled >= max_requests:
                    break
        finally:
            self._consumer.close()  # leaves the group at once, no session-timeout wait
        return handled

    def _process(self, tp: TopicPartition, record: ConsumerRecord) -> bool:
        """Handle one record; True when its offset may be committed (done or skipped)."""
        where = f"{tp.topic}/{tp.partition}@{record.offset}"
        try:
            request = decode_message(record.value)
        except ValidationError as exc:
            # A malformed request can never succeed: log it and move past it.
            log.error("malformed training request at %s: %s", where, exc.errors()[:3])
            metrics.record_outcome("failed")
            self._commit(tp, record.offset)
            return True
        ids = ({"tenant_id": request.tenant_id, "group_id": request.group_id}
               if isinstance(request, TrainingGroup)
               else {"tenant_id": request.tenant_id, "user_id": request.user_id})
        for attempt in range(1, self._config.max_attempts + 1):
            try:
                outcome = self._handler(request)
                break
            except Exception:
                log.exception("training request %s failed (attempt %d)", where, attempt, extra=ids)
                if self._stop.wait(self._config.retry_backoff_s * attempt):
                    # Stopping: leave the offset uncommitted so another member retries.
                    self._consumer.seek(tp, record.offset)
                    return False
        else:
            outcome = "failed"
            metrics.record_outcome(outcome)
            log.error("giving up on training request %s", where, extra=ids)
        log.info("request %s done: %s", where, outcome, extra={**ids, "outcome": outcome})
        self._commit(tp, record.offset)
        return True

    def _commit(self, tp: TopicPartition, offset: int) -> None:
        try:
            self._consumer.commit({tp: OffsetAndMetadata(offset + 1, None, -1)})
        except (CommitFailedError, KafkaError) as exc:
            # We lost the partition while working (rebalance): its new owner gets the
            # request again, and the pipeline's idempotency turns it into a no-op.
            log.warning("could not commit %s/%d@%d: %s", tp.topic, tp.partition, offset, exc)

    def _update_queue_depth(self) -> None:
        now = time.monotonic()
        if now - self._last_depth < self._config.queue_depth_every_s:
            return
        self._last_depth = now
        assigned = list(self._consumer.assignment())
        if not assigned:
            return
        try:
            ends = self._consumer.end_offsets(assigned)
            depth = 0
            for tp in assigned:
                committed = self._consumer.committed(tp) or 0
                depth += max(0, ends.get(tp, 0) - committed)
        except KafkaError as exc:
            log.debug("queue depth unavailable: %s", exc)
            return
        metrics.QUEUE_DEPTH.set(depth)


def send_requests(bootstrap: str, topic: str, requests: Sequence[TrainingMessage]) -> None:
    """Produce training requests (keyed `tenant/user`) or groups (keyed `tenant/group id`)
    and wait until the broker has them."""
    from tessera.events.kafka import make_producer

    producer = make_producer(bootstrap, client_id="tessera-scheduler")
    try:
        for request in requests:
            producer.send(topic, key=request.key, value=request.encode())
        producer.flush(timeout=30)
    finally:
        producer.close()
