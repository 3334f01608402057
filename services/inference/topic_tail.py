"""Tail a Kafka topic on every partition, in this process only: the serving side's reader.

A server instance must see every message of the topics it follows (`tessera.revisions`
for hot swap, `tessera.interactions` for prefetch), so it reads every partition itself:
no consumer group (every replica sees everything, and group joins on the local broker
take seconds). It reads from the beginning but skips messages stamped well before it
started (what happened before is already reflected); it does not seek to the end because
the local broker's end offsets can be wrong, which would skip messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Self

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE

log = logging.getLogger(__name__)

Handler = Callable[[bytes | None, bytes | None], None]
"""`handle(key, value)` of one message; its exceptions are its own business."""


def parse_key(key: bytes | None) -> tuple[str, str] | None:
    """`b"tenant/user"` -> (tenant, user); None for a key that is not one."""
    if not key:
        return None
    tenant, sep, user = key.decode("utf-8", "replace").partition("/")
    return (tenant, user) if sep and tenant and user else None


class TopicTail:
    """A thread that polls every partition of `topic` and calls `handle` per message."""

    def __init__(
        self,
        handle: Handler,
        *,
        bootstrap: str,
        topic: str,
        name: str,
        poll_ms: int = 100,
        skew_s: float = 5.0,
    ) -> None:
        self._handle = handle
        self._bootstrap = bootstrap
        self._topic = topic
        self._name = name
        self._poll_ms = poll_ms
        # messages older than this were published before we started: already reflected
        self._since_ms = int((time.time() - skew_s) * 1000)
        self._stop = threading.Event()
        self.ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self, *, wait_s: float = 30.0) -> Self:
        """Start and wait until every partition is assigned (messages after this are seen)."""
        self._thread.start()
        if not self.ready.wait(wait_s):
            raise RuntimeError(f"{self._name}: no partitions of {self._topic} within {wait_s}s")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _consumer(self) -> KafkaConsumer:
        consumer = KafkaConsumer(
            **NO_AUTO_CREATE,
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            client_id="tessera-inference",
        )
        deadline = time.monotonic() + 30.0
        partitions = consumer.partitions_for_topic(self._topic)
        while not partitions and time.monotonic() < deadline and not self._stop.is_set():
            time.sleep(0.2)
            partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            consumer.close()
            raise KafkaError(f"topic {self._topic} has no partitions")
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return consumer

    def _run(self) -> None:
        consumer: KafkaConsumer | None = None
        while not self._stop.is_set():
            try:
                if consumer is None:
                    consumer = self._consumer()
                    self.ready.set()
                batches = consumer.poll(timeout_ms=self._poll_ms)
                for records in batches.values():
                    for record in records:
                        if record.timestamp >= self._since_ms:
                            self._handle(record.key, record.value)
            except KafkaError as exc:
                log.warning("%s: %s; reconnecting", self._name, exc)
                if consumer is not None:
                    consumer.close()
                consumer = None
                self._stop.wait(1.0)
        if consumer is not None:
            consumer.close()
