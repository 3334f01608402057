"""End to end on the real store and broker: revision events in PostgreSQL move the
projection's head, a message on the revisions topic makes the server re-resolve, and new
requests are answered by the promoted (then rolled-back-to) adapter within 2 s."""

from __future__ import annotations

import copy
import json
import time
import uuid
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from tessera.events.kafka import ensure_topics
from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventEnvelope, EventType, utcnow
from tessera.schemas.revisions import (
    RevisionEvaluated,
    RevisionPromoted,
    RevisionRolledBack,
    RevisionTrained,
)
from tessera.schemas.settings import Settings
from tessera.services.inference.build import build_engine
from tessera.services.inference.component import projection_lookup
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.requests import GenerateRequest, GenerateResult
from tessera.services.inference.revision_follower import KafkaRevisionFollower, RevisionFollower
from tessera.services.inference.sampling import SamplingParams

from .conftest import Served3, engine_settings
from .helpers import byte_tokenizer
from .test_engine import greedy

pytestmark = pytest.mark.integration


def _event(user: str, kind: EventType, payload: object) -> EventEnvelope:
    from pydantic import BaseModel

    assert isinstance(payload, BaseModel)
    return EventEnvelope(
        event_type=kind,
        tenant_id="t1",
        user_id=user,
        occurred_at=utcnow(),
        data=payload.model_dump(mode="json"),
    )


def _promote(
    store: PostgresEventStore, user: str, rid: str, digest: str, previous: str | None
) -> None:
    trained = RevisionTrained(
        revision_id=rid,
        kind="personal",
        parent_revision_id=previous,
        base_model_id="tiny",
        base_digest="b" * 64,
        adapter_digest=digest,
        adapter_bytes=1,
        rank=4,
        alpha=8.0,
        target_modules=["q_proj", "v_proj", "down_proj"],
        seed=1,
        dataset_from=0,
        dataset_to=0,
        dataset_digest="d" * 64,
        code_version="test",
        trigger="test",
        train_seconds=0.0,
    )
    store.append(
        [
            _event(user, EventType.REVISION_TRAINED, trained),
            _event(
                user,
                EventType.REVISION_EVALUATED,
                RevisionEvaluated(revision_id=rid, metrics={"heldout_loss": 1.0}),
            ),
            _event(
                user,
                EventType.REVISION_PROMOTED,
                RevisionPromoted(
                    revision_id=rid, adapter_digest=digest, previous_revision_id=previous
                ),
            ),
        ]
    )


@pytest.fixture()
def wired(
    served3: Served3, stack: StackInfo, database_url: str
) -> Iterator[tuple[InferenceEngine, PostgresEventStore, KafkaProducer, str]]:
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        topic_interactions=f"t.{suffix}.i",
        topic_interactions_dlq=f"t.{suffix}.d",
        topic_training_requests=f"t.{suffix}.t",
        topic_revisions=f"t.{suffix}.revisions",
        topic_partitions=2,
    )
    ensure_topics(stack.kafka_bootstrap, settings)
    store = PostgresEventStore(database_url)
    engine = build_engine(
        copy.deepcopy(served3.base),
        byte_tokenizer(),
        served3.store,
        projection_lookup(database_url),
        settings=engine_settings(),
    ).start()
    follower = KafkaRevisionFollower(
        RevisionFollower(engine.resolver, engine.residency),
        bootstrap=stack.kafka_bootstrap,
        topic=settings.topic_revisions,
    ).start()
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0)
    yield engine, store, producer, settings.topic_revisions
    producer.close()
    follower.stop()
    engine.stop()
    store.close()


def _served_within(engine: InferenceEngine, want: str, budget_s: float) -> float:
    start = time.monotonic()
    while True:
        res = engine.submit(GenerateRequest("t1", "ann", "probe", SamplingParams(max_tokens=2)))
        if res.result().revision.name == want:
            return time.monotonic() - start
        assert time.monotonic() - start < budget_s, f"still not {want} after {budget_s}s"


def test_projection_driven_swap(
    wired: tuple[InferenceEngine, PostgresEventStore, KafkaProducer, str], served3: Served3
) -> None:
    engine, store, producer, topic = wired

    def ask() -> GenerateResult:
        return engine.submit(
            GenerateRequest("t1", "ann", "check", SamplingParams(max_tokens=8))
        ).result()

    assert ask().revision.source == "base"  # nothing promoted yet
    _promote(store, "ann", "rev-a1", served3.digests["ann"], None)
    producer.send(
        topic, key=b"t1/ann", value=json.dumps({"event_type": "revision.promoted"}).encode()
    ).get(timeout=10)
    _served_within(engine, "rev-a1", 2.0)
    assert ask().text == greedy(served3.peft["ann"], "check", 8)
    _promote(store, "ann", "rev-a2", served3.digests["cyd"], "rev-a1")
    producer.send(topic, key=b"t1/ann", value=b"{}").get(timeout=10)
    _served_within(engine, "rev-a2", 2.0)
    assert ask().text == greedy(served3.peft["cyd"], "check", 8)
    store.append(
        [
            _event(
                "ann",
                EventType.REVISION_ROLLED_BACK,
                RevisionRolledBack(
                    from_revision_id="rev-a2",
                    to_revision_id="rev-a1",
                    to_adapter_digest=served3.digests["ann"],
                    reason="test",
                    actor="admin",
                ),
            )
        ]
    )
    producer.send(topic, key=b"t1/ann", value=b"{}").get(timeout=10)
    _served_within(engine, "rev-a1", 2.0)
    assert ask().text == greedy(served3.peft["ann"], "check", 8)
