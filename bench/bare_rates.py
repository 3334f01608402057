"""The limits the ingest pipeline sits on, measured bare on the same broker and database:
a kafka-python producer, a kafka-python consumer, and PostgreSQL `COPY` of the same rows.

Each function times one pass over the given records and returns records per second.
They run while nothing else of the benchmark does, so each has the machine to itself.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from psycopg import sql
from psycopg.types.json import Jsonb

from tessera.events.db import connect, translated
from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE
from tessera.schemas.events import EventEnvelope

Record = tuple[bytes, bytes]  # (key, value)


def create_topic(bootstrap: str, partitions: int) -> str:
    """A fresh topic for one measurement (the local broker keeps nothing across runs)."""
    name = f"tessera.bench.bare.{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="tessera-bench")
    try:
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return name


def bare_produce(bootstrap: str, topic: str, records: Sequence[Record]) -> float:
    """kafka-python at its best settings measured here (acks=all like the pipeline,
    5 requests in flight, 5 ms linger, 1 MiB batches): records/s until all are acked."""
    producer = KafkaProducer(
        **NO_AUTO_CREATE,
        bootstrap_servers=bootstrap,
        client_id="tessera-bench-bare",
        acks="all",
        linger_ms=5,
        batch_size=1 << 20,
        max_request_size=4 << 20,
        max_in_flight_requests_per_connection=5,
        enable_idempotence=False,
    )
    try:
        producer.send(topic, key=b"warmup", value=b"{}").get(30)  # metadata and connection
        start = time.perf_counter()
        for key, value in records:
            producer.send(topic, key=key, value=value)
        producer.flush()
        elapsed = time.perf_counter() - start
    finally:
        producer.close()
    return len(records) / elapsed


def bare_consume(bootstrap: str, topic: str, expect: int, *, timeout_s: float = 120.0) -> float:
    """kafka-python reading `expect` records of `topic` from the beginning (no consumer
    group: assignment and offset commits are not what is measured): records/s."""
    consumer = KafkaConsumer(
        **NO_AUTO_CREATE,
        bootstrap_servers=bootstrap,
        client_id="tessera-bench-bare",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_bytes=32 << 20,
        max_partition_fetch_bytes=8 << 20,
        max_poll_records=10_000,
    )
    try:
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        seen = 0
        start = time.perf_counter()
        deadline = start + timeout_s
        while seen < expect and time.perf_counter() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                seen += len(batch)
        elapsed = time.perf_counter() - start
    finally:
        consumer.close()
    if seen < expect:
        raise RuntimeError(f"bare consumer read {seen} of {expect} records in {timeout_s} s")
    return seen / elapsed


_COPY_COLUMNS = (
    "event_id",
    "tenant_id",
    "user_id",
    "stream_version",
    "event_type",
    "schema_version",
    "occurred_at",
    "correlation_id",
    "data",
)


def bare_copy(database_url: str, envelopes: Sequence[EventEnvelope]) -> float:
    """`COPY` of the same rows into a table shaped like `events` (logged, with its
    indexes and constraints, so the work is the log's), in one transaction: rows/s."""
    table = sql.Identifier(f"bare_copy_{uuid.uuid4().hex[:8]}")
    columns = sql.SQL(", ").join(map(sql.Identifier, _COPY_COLUMNS))
    versions: dict[str, int] = {}
    rows = []
    for env in envelopes:
        version = versions[env.stream_key] = versions.get(env.stream_key, 0) + 1
        rows.append(
            (
                env.event_id,
                env.tenant_id,
                env.user_id,
                version,
                env.event_type,
                env.schema_version,
                env.occurred_at,
                env.correlation_id,
                Jsonb(env.data),
            )
        )
    with translated("bare COPY"), connect(database_url) as conn:
        conn.execute(sql.SQL("CREATE TABLE {} (LIKE events INCLUDING ALL)").format(table))
        conn.commit()
        try:
            start = time.perf_counter()
            with (
                conn.cursor() as cur,
                cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(table, columns)) as copy,
            ):
                for row in rows:
                    copy.write_row(row)
            conn.commit()
            elapsed = time.perf_counter() - start
        finally:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table))
            conn.commit()
    return len(rows) / elapsed
