"""Kafka plumbing shared by every producer of Tessera events: topics, producer, wire format.

The wire format of a record on `tessera.interactions` is the `EventEnvelope` as JSON
(UTF-8) with the key `tenant/user`, so one user's events land in one partition and stay
in order. The broker may be Tansu (the local stack) or Apache Kafka; nothing here relies
on transactions, idempotent producers or end offsets, which Tansu lacks.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE
from tessera.schemas.events import EventEnvelope
from tessera.schemas.settings import Settings

log = logging.getLogger(__name__)


class KafkaSetupError(RuntimeError):
    """Topics could not be created or the broker could not be reached."""


def topic_names(settings: Settings) -> list[str]:
    """Every topic Tessera uses, as configured."""
    return [
        settings.topic_interactions,
        settings.topic_interactions_dlq,
        settings.topic_training_requests,
        settings.topic_revisions,
    ]


def ensure_topics(bootstrap: str, settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """Create every topic that does not exist yet, with `settings.topic_partitions`
    partitions (replication 1: the local broker is one node). Returns the topics created
    by this call. Topics that already exist are left as they are (idempotent)."""
    admin = _admin(bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        wanted = [name for name in topic_names(settings) if name not in existing]
        created: list[str] = []
        for name in wanted:
            # One topic per request: a concurrent creator (another process starting at the
            # same time) makes only its own topic fail with "already exists".
            topic = NewTopic(name, num_partitions=settings.topic_partitions, replication_factor=1)
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", created)
        return created
    except KafkaError as exc:
        raise KafkaSetupError(f"could not create topics on {bootstrap}: {exc}") from exc
    finally:
        admin.close()


def topic_id(bootstrap: str, topic: str, *, timeout_s: float = 30.0) -> str | None:
    """The broker's id of this incarnation of `topic` (a UUID; None if the broker does
    not report one). A topic deleted and created again (or a Tansu broker restarted with
    in-memory storage) gets a new id and starts its offsets at 0 again."""
    admin = _admin(bootstrap, timeout_s)
    try:
        (described,) = admin.describe_topics([topic])
    except (KafkaError, ValueError) as exc:
        raise KafkaSetupError(f"could not describe topic {topic} on {bootstrap}: {exc}") from exc
    finally:
        admin.close()
    found = described.get("topic_id")
    # Kafka reports the all-zero UUID when it has no id for the topic.
    if not found or str(found) == "00000000-0000-0000-0000-000000000000":
        return None
    return str(found)


def _admin(bootstrap: str, timeout_s: float) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(
            bootstrap_servers=bootstrap,
            client_id="tessera-admin",
            request_timeout_ms=int(timeout_s * 1000),
        )
    except KafkaError as exc:
        raise KafkaSetupError(f"Kafka broker {bootstrap} is unreachable: {exc}") from exc


def make_producer(bootstrap: str, *, client_id: str = "tessera") -> KafkaProducer:
    """A producer for envelopes: `acks='all'` so an acknowledged send is on every in-sync
    replica; a few milliseconds of linger and large batches so a burst of small events
    travels in few requests. No idempotence: Tansu does not support it, and duplicates
    are harmless because `event_id` is the idempotency key of the log.

    `max_in_flight_requests_per_connection=1` keeps retries from reordering one user's
    events (without idempotence a retried batch could overtake a later one)."""
    try:
        return KafkaProducer(
            **NO_AUTO_CREATE,
            bootstrap_servers=bootstrap,
            client_id=client_id,
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
            compression_type=None,
            retries=5,
            max_in_flight_requests_per_connection=1,
            enable_idempotence=False,
            request_timeout_ms=30_000,
        )
    except KafkaError as exc:
        raise KafkaSetupError(f"Kafka broker {bootstrap} is unreachable: {exc}") from exc


def encode_envelope(env: EventEnvelope) -> bytes:
    """The record value: the envelope as UTF-8 JSON."""
    return env.model_dump_json().encode()


def stream_key(env: EventEnvelope) -> bytes:
    """The record key, `tenant/user`: one user's events share a partition and stay ordered."""
    return env.stream_key.encode()
