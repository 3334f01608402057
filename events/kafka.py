"""Kafka plumbing shared by every producer of Tessera events: topics, producer, wire format.

The wire format of a record on `tessera.interactions` is the `EventEnvelope` as JSON
(UTF-8) with the key `tenant/user`, so one user's events land in one partition and stay
in order. The broker may be Tansu (the local stack) or Apache Kafka; nothing here relies
on transactions, idempotent producers or end offsets, which Tansu lacks.
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from tessera.events.kafka_no_autocreate import NO_AUTO_CREATE
from tessera.events.topic_policy import TopicPolicy
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
    partitions and the replication, min.insync.replicas and (for the topics carrying
    users' text) retention of `TopicPolicy`. Returns the topics created by this call.
    Topics that already exist are left as they are (idempotent), but each one weaker than
    the policy is logged as a warning (see `check_topics`)."""
    policy = TopicPolicy.from_settings(settings)
    admin = _admin(bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        wanted = [name for name in topic_names(settings) if name not in existing]
        created: list[str] = []
        for name in wanted:
            # One topic per request: a concurrent creator (another process starting at the
            # same time) makes only its own topic fail with "already exists".
            topic = NewTopic(
                name,
                num_partitions=settings.topic_partitions,
                replication_factor=policy.replication_factor,
                topic_configs=policy.configs(name),
            )
            try:
                admin.create_topics([topic], timeout_ms=int(timeout_s * 1000))
                created.append(name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", created)
        older = [name for name in topic_names(settings) if name in existing]
        if older:
            _warn_weak(admin, older, policy)
        return created
    except KafkaError as exc:
        raise KafkaSetupError(f"could not create topics on {bootstrap}: {exc}") from exc
    finally:
        admin.close()


def check_topics(bootstrap: str, settings: Settings, *, timeout_s: float = 30.0) -> list[str]:
    """How the existing Tessera topics fall short of `TopicPolicy` (one line per
    shortfall; empty when none does). Missing topics are not reported."""
    policy = TopicPolicy.from_settings(settings)
    admin = _admin(bootstrap, timeout_s)
    try:
        existing = set(admin.list_topics())
        return _weaknesses(admin, [n for n in topic_names(settings) if n in existing], policy)
    except KafkaError as exc:
        raise KafkaSetupError(f"could not describe topics on {bootstrap}: {exc}") from exc
    finally:
        admin.close()


def _warn_weak(admin: KafkaAdminClient, names: list[str], policy: TopicPolicy) -> None:
    # A check that fails must not stop a process from starting: the topics work, only
    # their guarantees are unknown.
    try:
        problems = _weaknesses(admin, names, policy)
    except (KafkaError, ValueError, KeyError, TypeError) as exc:
        log.warning("could not check the settings of topics %s: %s", names, exc)
        return
    for problem in problems:
        log.warning("topic weaker than configured: %s", problem)


def _weaknesses(admin: KafkaAdminClient, names: list[str], policy: TopicPolicy) -> list[str]:
    if not names:
        return []
    replicas = {
        str(t["name"]): min((len(p["replica_nodes"]) for p in t["partitions"]), default=0)
        for t in admin.describe_topics(names)
    }
    # All configs (defaults included: they are what applies). Not filtered by name:
    # Tansu drops the connection when a DescribeConfigs names the configs it wants.
    described = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name) for name in names],
        config_filter="all",
    )
    problems: list[str] = []
    for name in names:
        entries = described.get("topic", {}).get(name, {})
        configs = {key: str(entry.get("value")) for key, entry in entries.items()}
        problems += policy.weaknesses(name, replicas=replicas.get(name, 0), configs=configs)
    return problems


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
