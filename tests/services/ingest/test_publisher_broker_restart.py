"""The ingest publisher against a restarted in-memory broker (a private Tansu each).

Found by the soak: a producer that retried its batches into a restarted Tansu wrote them
into not-yet-created partitions, which then held overlapping record batches (the same
offset twice) and took produces at ~80/s; the ingest worker stepped over acknowledged
events there. The publisher now retires its producer on a broken connection, and no
client auto-creates topics."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition
from kafka.admin import KafkaAdminClient

from tessera.events.kafka import ensure_topics
from tessera.events.kafka_publisher import KafkaPublisher, PublishError
from tessera.infra.stack import Broker
from tessera.schemas.settings import Settings

TOPIC = "tessera.interactions"


@contextmanager
def publishing(publisher: KafkaPublisher, threads: int = 3) -> Iterator[set[int]]:
    """Threads publishing batches of 20 numbered records until the block ends, each batch
    retried until acknowledged; yields the set of numbers the broker acknowledged."""
    acked: set[int] = set()
    counter, lock, stop = iter(range(0, 10**9, 20)), threading.Lock(), threading.Event()

    def run() -> None:
        while not stop.is_set():
            with lock:
                first = next(counter)
            records = [(f"u{n % 30}".encode(), f"n={n}".encode()) for n in range(first, first + 20)]
            while not stop.is_set():
                try:
                    publisher.publish(TOPIC, records).result(20)
                except PublishError:
                    time.sleep(0.2)  # what a client does with the 503: the same batch again
                    continue
                with lock:
                    acked.update(range(first, first + 20))
                break

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    try:
        yield acked
    finally:
        stop.set()
        for w in workers:
            w.join(60)


def read_topic(bootstrap: str) -> dict[int, list[tuple[int, int]]]:
    """partition -> [(offset, record number)] for the whole topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             allow_auto_create_topics=False)
    try:
        tps = [TopicPartition(TOPIC, p) for p in sorted(consumer.partitions_for_topic(TOPIC))]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        out: dict[int, list[tuple[int, int]]] = {tp.partition: [] for tp in tps}
        idle = 0
        while idle < 3:
            got = consumer.poll(timeout_ms=1000)
            idle = 0 if got else idle + 1
            for tp, records in got.items():
                out[tp.partition] += [(r.offset, int(r.value.split(b"=")[1])) for r in records]
        return out
    finally:
        consumer.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path / "broker")
    own.start()
    yield own
    own.stop()


def test_a_broker_restart_under_load_leaves_no_overlapping_batches_and_loses_nothing(
    broker: Broker, tmp_path: Path
) -> None:
    settings = Settings(topic_partitions=4, state_dir=tmp_path / "state")
    ensure_topics(broker.bootstrap, settings)
    publisher = KafkaPublisher(broker.bootstrap, timeout_s=10)
    try:
        with publishing(publisher):
            time.sleep(2)
            broker.kill()
            broker.start()  # empty: no topics until someone creates them
            time.sleep(1)
            ensure_topics(broker.bootstrap, settings)
            with publishing(publisher) as after:
                time.sleep(3)
        retired = publisher.retired
    finally:
        publisher.close()
    topic = read_topic(broker.bootstrap)
    offsets = [o for records in topic.values() for o, _ in records]
    numbers = [n for records in topic.values() for _, n in records]
    # Each offset once per partition (overlapping batches repeat them), nothing twice.
    for partition, records in topic.items():
        seen = [o for o, _ in records]
        assert seen == sorted(set(seen)), f"partition {partition} repeats offsets"
    assert len(numbers) == len(set(numbers)) == len(offsets)
    assert after, "nothing was acknowledged after the restart"
    assert after <= set(numbers)
    assert retired >= 1  # the producer that lived through the restart was retired


def test_publishing_to_a_missing_topic_fails_without_creating_it(broker: Broker) -> None:
    publisher = KafkaPublisher(broker.bootstrap, timeout_s=10)
    try:
        with pytest.raises(PublishError, match="does not exist"):
            publisher.publish(TOPIC, [(b"k", b"v")]).result(30)
    finally:
        publisher.close()
    admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
    try:
        assert TOPIC not in admin.list_topics()
    finally:
        admin.close()


def test_a_publisher_that_may_create_topics_makes_a_missing_one_properly(
    broker: Broker, tmp_path: Path
) -> None:
    # What the server does after the in-memory broker restarted: create the topics with
    # their configured partitions (CreateTopics), never by auto-creation, then publish.
    settings = Settings(topic_partitions=3, state_dir=tmp_path / "state")
    publisher = KafkaPublisher(broker.bootstrap, timeout_s=10,
                               create_topics=lambda: ensure_topics(broker.bootstrap, settings))
    try:
        records = [(f"u{n}".encode(), f"n={n}".encode()) for n in range(30)]
        publisher.publish(TOPIC, records).result(30)
    finally:
        publisher.close()
    topic = read_topic(broker.bootstrap)
    assert len(topic) == 3
    assert sorted(n for recs in topic.values() for _, n in recs) == list(range(30))
