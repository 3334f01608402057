"""Fixtures for the ingest API tests: a real broker, per-test topics, a running service."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from kafka import KafkaConsumer

from tessera.events.kafka import ensure_topics
from tessera.events.kafka_publisher import KafkaPublisher
from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventEnvelope
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.ingest.service import IngestConfig, IngestService
from tessera.services.routes import ingest as ingest_routes

ADMIN_KEY = "test-admin-key"
# key -> tenant; the lookup the authenticator would make against the tenants table.
KEYS = {"key-acme": "acme", "key-globex": "globex"}


@pytest.fixture()
def settings() -> Settings:
    """Settings whose topics are unique to this test, so tests never see each other's
    records on the shared broker; small limits so over-limit inputs are cheap."""
    suffix = uuid.uuid4().hex[:10]
    return Settings(
        topic_interactions=f"t.{suffix}.interactions",
        topic_interactions_dlq=f"t.{suffix}.dlq",
        topic_training_requests=f"t.{suffix}.training",
        topic_revisions=f"t.{suffix}.revisions",
        topic_partitions=2,
        max_batch_events=20,
        max_text_chars=200,
        admin_key=ADMIN_KEY,
    )


@pytest.fixture()
def ingest_service(stack: StackInfo, settings: Settings) -> Iterator[IngestService]:
    ensure_topics(stack.kafka_bootstrap, settings)
    publisher = KafkaPublisher(stack.kafka_bootstrap, client_id="test-ingest")
    service = IngestService(publisher=publisher, config=IngestConfig.from_settings(settings))
    yield service
    service.close()


@pytest.fixture()
def authenticator() -> KeyAuthenticator:
    return KeyAuthenticator(lookup=KEYS.get, admin_key=ADMIN_KEY, cache_ttl_s=0)


def ingest_app(**state: object) -> FastAPI:
    """An app with only the ingest routes (the full app's other routers belong to other
    features and are tested there)."""
    app = FastAPI()
    for name, value in state.items():
        setattr(app.state, name, value)
    app.include_router(ingest_routes.router)
    return app


def read_topic(
    bootstrap: str, topic: str, *, expect: int, timeout_s: float = 20.0
) -> list[tuple[bytes, EventEnvelope]]:
    """Every record on `topic` (key, envelope), reading until `expect` arrived and then
    a short while longer, so that extra records would be seen too."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1500,
    )
    out: list[tuple[bytes, EventEnvelope]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=500)
            for records in batch.values():
                for rec in records:
                    out.append((rec.key, EventEnvelope.model_validate_json(rec.value)))
            if len(out) >= expect and not batch:
                break
    finally:
        consumer.close()
    return out
