"""The ingest worker's fetch wait: how long the broker may hold an empty fetch.

Kafka answers a waiting fetch as soon as records arrive; Tansu (the local stack's broker)
holds it for the whole `fetch_max_wait_ms` even then (measured with a bare aiokafka
consumer on Tansu, one record at a time: p50 669 ms at 1,500 ms, 153 ms at 500, 18 ms at
100). faust fixes that wait at 1,500 ms for its worker consumer, so on Tansu each quiet
moment added up to 1.5 s between a 202 and the event being in the log. The worker sets
it from `stream_fetch_max_wait_ms` instead; under load fetches return full anyway, so a
short wait costs only a few idle fetches per second.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread


def set_fetch_max_wait(milliseconds: int) -> None:
    """Make faust's worker consumers (created after this call) use `milliseconds`."""
    create = getattr(AIOKafkaConsumerThread, "_tessera_create", None)
    if create is None:
        create = AIOKafkaConsumerThread._create_worker_consumer
        AIOKafkaConsumerThread._tessera_create = create  # type: ignore[attr-defined]

    def create_worker_consumer(self: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(self, transport)
        # Read by the consumer when it starts its fetcher (aiokafka has no setter).
        consumer._fetch_max_wait_ms = milliseconds
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = create_worker_consumer  # type: ignore[method-assign]
