"""Fixtures: a real PostgreSQL store, a real adapter store, and corrective actions that
publish on a revisions topic of the test's own on the shared broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.events.kafka import ensure_topics
from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings
from tessera.services.corrective import CorrectiveActions, KafkaRevisionPublisher
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import TopicReader


@pytest.fixture()
def store(database_url: str) -> Iterator[PostgresEventStore]:
    s = PostgresEventStore(database_url)
    yield s
    s.close()


@pytest.fixture()
def adapters(tmp_path: Path) -> LocalAdapterStore:
    return LocalAdapterStore(tmp_path / "state" / "adapters")


@pytest.fixture()
def revisions_topic(stack: StackInfo) -> str:
    tag = uuid.uuid4().hex[:10]
    topic = f"test-{tag}.revisions"
    settings = Settings(
        topic_interactions=f"test-{tag}.interactions",
        topic_interactions_dlq=f"test-{tag}.interactions.dlq",
        topic_training_requests=f"test-{tag}.training-requests",
        topic_revisions=topic,
        topic_partitions=2,
    )
    ensure_topics(stack.kafka_bootstrap, settings)
    return topic


@pytest.fixture()
def publisher(stack: StackInfo, revisions_topic: str) -> Iterator[KafkaRevisionPublisher]:
    p = KafkaRevisionPublisher(stack.kafka_bootstrap, revisions_topic)
    yield p
    p.close()


@pytest.fixture()
def actions(
    store: PostgresEventStore, adapters: LocalAdapterStore, publisher: KafkaRevisionPublisher
) -> CorrectiveActions:
    return CorrectiveActions(store, adapters, publisher)


@pytest.fixture()
def topic_reader(stack: StackInfo, revisions_topic: str) -> Iterator[TopicReader]:
    reader = TopicReader(stack.kafka_bootstrap, revisions_topic)
    yield reader
    reader.close()
