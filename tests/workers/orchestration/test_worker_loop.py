"""The trainer group member's loop against the real broker, without a model: malformed
requests are skipped, failing ones retried, a night's group handed over as one message,
offsets committed only after the handler."""

from __future__ import annotations

import json
import logging
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from tessera.events.kafka import ensure_topics
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings
from tessera.workers.json_logs import json_formatter
from tessera.workers.metrics import GATE_PASS_RATE, record_outcome
from tessera.workers.train_worker import TrainWorker, WorkerConfig
from tessera.workers.training_request import TrainingGroup, TrainingMessage, TrainingRequest

pytestmark = pytest.mark.integration


def test_malformed_skipped_failure_retried_offsets_committed(stack: StackInfo) -> None:
    topic = f"test.requests.{uuid.uuid4().hex[:8]}"
    ensure_topics(stack.kafka_bootstrap, Settings(topic_training_requests=topic,
                                                  topic_partitions=1))
    good = TrainingRequest(tenant_id="acme", user_id="alice", up_to_position=42)
    night = TrainingGroup.of([TrainingRequest(tenant_id="acme", user_id=u, up_to_position=50)
                              for u in ("bob", "carol")])
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    for value in (b"{not json", json.dumps({"tenant_id": "acme"}).encode(), good.encode(),
                  night.encode()):
        producer.send(topic, key=b"acme/alice", value=value)
    producer.flush()
    producer.close()

    calls: list[TrainingMessage] = []

    def handler(request: TrainingMessage) -> str:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("database briefly away")  # transient: retried
        return "promoted"

    group = f"g-{uuid.uuid4().hex[:8]}"
    config = WorkerConfig(bootstrap=stack.kafka_bootstrap, topic=topic, group_id=group,
                          retry_backoff_s=0.1)
    handled = TrainWorker(config, handler).run(max_requests=4)

    assert handled == 4
    assert calls == [good, good, night]
    probe = KafkaConsumer(bootstrap_servers=stack.kafka_bootstrap, group_id=group,
                          enable_auto_commit=False)
    assert probe.committed(TopicPartition(topic, 0)) == 4  # all four done, none pending
    probe.close()


def test_gate_pass_rate_and_json_logs_carry_ids() -> None:
    record_outcome("promoted")
    record_outcome("rejected")
    assert 0 < GATE_PASS_RATE._value.get() < 1  # windowed share of promotions
    record = logging.LogRecord("tessera.workers", logging.INFO, __file__, 1, "trained %s",
                               ("abc",), None)
    record.user_id, record.revision_id = "alice", "rev-1"
    line = json.loads(json_formatter().format(record))
    assert line["msg"] == "trained abc"
    assert (line["user_id"], line["revision_id"]) == ("alice", "rev-1")
