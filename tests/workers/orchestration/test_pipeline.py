"""The revision pipeline on the real event log: prior first, personal revisions warm-
started from it, every decision recorded with its reasons and provenance, and published
on Kafka only after PostgreSQL has it."""

from __future__ import annotations

import random
import uuid

import pytest
from kafka import KafkaConsumer

from tessera.events.catalog import served_revision
from tessera.events.kafka import ensure_topics
from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope
from tessera.schemas.settings import Settings
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.gate import GateConfig
from tessera.workers.pipeline import Engine, RevisionOutcome, RevisionPipeline
from tessera.workers.reproduce import reproduce_revision
from tessera.workers.runtime import KafkaPublisher
from tessera.workers.training_request import TrainingRequest

from .conftest import STYLES, TENANT, exchanges, garbage, tiny_pipeline_config

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _train(pipeline: RevisionPipeline, store: PostgresEventStore, user: str,
           up_to: int | None = None) -> RevisionOutcome:
    position = store.head_position() if up_to is None else up_to
    request = TrainingRequest(tenant_id=TENANT, user_id=user, up_to_position=position,
                              trigger="test")
    return pipeline.run(request)


def _tenant_with_prior(pipeline: RevisionPipeline, store: PostgresEventStore) -> RevisionOutcome:
    for user in STYLES:
        store.append(exchanges(user, 24))
    prior = _train(pipeline, store, PRIOR_USER_ID)
    assert prior.outcome == "promoted", prior.reasons
    return prior


def test_prior_then_personal_revision_with_provenance_published_after_commit(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine, stack: StackInfo,
) -> None:
    topic = f"test.revisions.{uuid.uuid4().hex[:8]}"
    settings = Settings(topic_revisions=topic, topic_partitions=2)
    ensure_topics(stack.kafka_bootstrap, settings)
    publisher = KafkaPublisher(stack.kafka_bootstrap, topic)
    pipeline = RevisionPipeline(pg_store, adapters, engine, tiny_pipeline_config(),
                                publish=publisher)
    try:
        prior = _tenant_with_prior(pipeline, pg_store)
        pg_store.append(exchanges("alice", 20, seed=1))
        up_to = pg_store.head_position()
        alice = _train(pipeline, pg_store, "alice", up_to)
    finally:
        publisher.close()

    assert alice.outcome == "promoted", alice.reasons
    assert alice.parent_revision_id == prior.revision_id  # warm start from the prior
    assert alice.baseline_revision_id == prior.revision_id  # gated against the prior
    assert alice.metrics["user_nll"] < alice.baseline_metrics["user_nll"]
    served = served_revision(pg_store, TENANT, "alice")
    assert (served.source, served.revision_id) == ("personal", alice.revision_id)

    row = pg_store.get_revision(alice.revision_id or "")
    assert row is not None and row.state == "promoted"
    prov = row.provenance
    assert prov["base_model_id"] == "tiny-llama" and prov["base_digest"] == engine.base.digest
    assert prov["parent_revision_id"] == prior.revision_id
    assert prov["adapter_digest"] == alice.adapter_digest and prov["adapter_bytes"] > 0
    assert prov["dataset_to"] == up_to and len(prov["heldout_positions"]) == 4
    assert prov["code_version"].startswith(("git:", "tessera=="))
    assert prov["seed"] == 7 and prov["hyperparameters"]["train"]["rank"] == 4
    assert prov["trigger"] == "test"
    assert adapters.exists(row.adapter_digest)

    # Both decisions went out on the revisions topic, keyed tenant/user, in order.
    consumer = KafkaConsumer(topic, bootstrap_servers=stack.kafka_bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=8000)
    got = {m.key.decode(): EventEnvelope.model_validate_json(m.value) for m in consumer}
    consumer.close()
    assert set(got) == {f"{TENANT}/{PRIOR_USER_ID}", f"{TENANT}/alice"}
    assert got[f"{TENANT}/alice"].event_type == "revision.promoted"
    assert got[f"{TENANT}/alice"].data["revision_id"] == alice.revision_id

    # The same request again is a no-op: no second revision, nothing retrained.
    again = _train(pipeline, pg_store, "alice", up_to)
    assert again.outcome == "skipped" and again.revision_id == alice.revision_id
    assert len(pg_store.list_revisions(TENANT, "alice")) == 1


def test_personal_revision_not_beating_the_prior_is_rejected_and_prior_still_served(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine,
) -> None:
    pipeline = RevisionPipeline(pg_store, adapters, engine,
                                tiny_pipeline_config(gate=GateConfig(min_gain=0.02)))
    prior = _tenant_with_prior(pipeline, pg_store)
    # Erin writes like the tenant as a whole: nothing personal beyond what the prior knows.
    mix = [e for user in STYLES for e in exchanges(user, 6, seed=2)]
    random.Random(0).shuffle(mix)
    pg_store.append([e.model_copy(update={"user_id": "erin", "event_id": uuid.uuid4()})
                     for e in mix])
    erin = _train(pipeline, pg_store, "erin")

    assert erin.outcome == "rejected"
    assert erin.baseline_revision_id == prior.revision_id
    assert any("gain" in reason and "required" in reason for reason in erin.reasons)
    row = pg_store.get_revision(erin.revision_id or "")
    assert row is not None and row.state == "rejected" and row.reasons == erin.reasons
    assert row.metrics["user_nll"] == erin.metrics["user_nll"]
    served = served_revision(pg_store, TENANT, "erin")
    assert (served.source, served.revision_id) == ("prior", prior.revision_id)


def test_poisoned_stream_yields_a_rejected_revision_and_the_head_stays(
    pg_store: PostgresEventStore, pipeline: RevisionPipeline,
) -> None:
    _tenant_with_prior(pipeline, pg_store)
    pg_store.append(exchanges("alice", 20, seed=1))
    good = _train(pipeline, pg_store, "alice")
    assert good.outcome == "promoted", good.reasons
    # Alice's recent events are replaced by spam: the newest held-out events are spam too,
    # so only her earlier held-out examples can tell.
    pg_store.append(garbage("alice", 40))
    poisoned = _train(pipeline, pg_store, "alice")

    assert poisoned.outcome == "rejected"
    assert any("earlier held-out NLL" in reason for reason in poisoned.reasons)
    assert poisoned.metrics["history_nll"] > poisoned.baseline_metrics["history_nll"]
    served = served_revision(pg_store, TENANT, "alice")
    assert (served.source, served.revision_id) == ("personal", good.revision_id)


def test_promoted_revision_is_retrained_to_the_same_digest_from_its_provenance(
    pg_store: PostgresEventStore, pipeline: RevisionPipeline,
) -> None:
    prior = _tenant_with_prior(pipeline, pg_store)
    pg_store.append(exchanges("alice", 20, seed=1))
    alice = _train(pipeline, pg_store, "alice")
    assert alice.outcome == "promoted"
    # More events arrive afterwards: the rebuild must take exactly the recorded window.
    pg_store.append(exchanges("alice", 5, seed=9))

    for revision_id in (prior.revision_id, alice.revision_id):
        again = reproduce_revision(pipeline, revision_id or "")
        assert again.dataset_matches, revision_id
        assert again.adapter_matches, revision_id
