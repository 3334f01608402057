"""Topics are created with the configured replication, min.insync.replicas and (for the
topics carrying users' text) retention, read back from the real Tansu broker; existing
topics weaker than configured are reported at start."""

from __future__ import annotations

import logging
import uuid

import pytest
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient, NewTopic

from tessera.events.kafka import check_topics, ensure_topics, topic_names
from tessera.events.topic_policy import DAY_MS, HOUR_MS, TopicPolicy
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings


def _settings(**overrides: int) -> Settings:
    tag = uuid.uuid4().hex[:10]
    return Settings.model_validate({
        "topic_interactions": f"tp-{tag}.interactions",
        "topic_interactions_dlq": f"tp-{tag}.interactions.dlq",
        "topic_training_requests": f"tp-{tag}.training-requests",
        "topic_revisions": f"tp-{tag}.revisions",
        "topic_partitions": 2,
        **overrides,
    })


def _described(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="test-topic-policy")
    try:
        out = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names], config_filter="all"
        )
    finally:
        admin.close()
    return {n: {k: str(v["value"]) for k, v in out["topic"][n].items()} for n in names}


def test_defaults_differ_for_the_embedded_broker_and_an_external_cluster() -> None:
    embedded = TopicPolicy.from_settings(Settings())
    assert (embedded.replication_factor, embedded.min_insync_replicas) == (1, 1)
    assert embedded.retention_ms == HOUR_MS
    external = TopicPolicy.from_settings(Settings(kafka_bootstrap="kafka-1:9092"))
    assert (external.replication_factor, external.min_insync_replicas) == (3, 2)
    assert external.retention_ms == 7 * DAY_MS
    assert external.segment_ms == DAY_MS  # a record lives at most retention + segment.ms
    two = TopicPolicy.from_settings(
        Settings(kafka_bootstrap="k:9092", topic_replication_factor=1)
    )
    assert two.min_insync_replicas == 1  # never more than the replicas there are
    with pytest.raises(ValueError, match="MIN_INSYNC_REPLICAS=3 exceeds"):
        Settings(topic_replication_factor=2, topic_min_insync_replicas=3)


def test_topics_are_created_with_the_configured_retention_and_insync(stack: StackInfo) -> None:
    settings = _settings(topic_retention_ms=120_000)
    created = ensure_topics(stack.kafka_bootstrap, settings)
    assert sorted(created) == sorted(topic_names(settings))

    configs = _described(stack.kafka_bootstrap, topic_names(settings))
    for content in (settings.topic_interactions, settings.topic_interactions_dlq):
        assert configs[content]["retention.ms"] == "120000"
        assert configs[content]["segment.ms"] == "120000"
        assert configs[content]["min.insync.replicas"] == "1"
    # Only the topics that carry users' text get the short retention.
    for other in (settings.topic_training_requests, settings.topic_revisions):
        assert "retention.ms" not in configs[other]
        assert configs[other]["min.insync.replicas"] == "1"
    # As created, nothing is weaker than configured (the embedded broker: 1 replica).
    assert check_topics(stack.kafka_bootstrap, settings) == []


def test_existing_topics_weaker_than_configured_are_warned_about(
    stack: StackInfo, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(topic_replication_factor=3, topic_min_insync_replicas=2)
    # Topics as an older Tessera made them: one replica, no configs.
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap, client_id="test-old")
    try:
        admin.create_topics(
            [NewTopic(n, num_partitions=2, replication_factor=1) for n in topic_names(settings)]
        )
    finally:
        admin.close()

    with caplog.at_level(logging.WARNING, logger="tessera.events.kafka"):
        assert ensure_topics(stack.kafka_bootstrap, settings) == []  # left as they are

    warned = [r.getMessage() for r in caplog.records if "weaker than configured" in r.message]
    for name in topic_names(settings):
        mine = [w for w in warned if f": {name}:" in w]
        assert any("1 replica(s) per partition, configured 3" in w for w in mine), warned
        assert any("min.insync.replicas" in w and "configured 2" in w for w in mine), warned
    retention = [w for w in warned if "retention.ms" in w]
    assert len(retention) == 2  # interactions and its DLQ, whose records hold users' text
    assert all(settings.topic_interactions in w for w in retention)
    assert check_topics(stack.kafka_bootstrap, settings) == [
        w.removeprefix("topic weaker than configured: ") for w in warned
    ]
