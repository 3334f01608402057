"""Hot swap through the real broker: promotion, rollback and forgetting take effect for
new requests within 2 s, under load, with no request failing and no restart."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from kafka import KafkaProducer

from tessera.events.kafka import ensure_topics
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.requests import GenerateRequest
from tessera.services.inference.revision_follower import KafkaRevisionFollower, RevisionFollower
from tessera.services.inference.revisions import BASE, Served
from tessera.services.inference.sampling import SamplingParams

from .conftest import Served3
from .test_engine import greedy

pytestmark = pytest.mark.integration

SWAP_BUDGET_S = 2.0


@dataclass
class Outcome:
    submitted: float
    revision: str
    ok: bool
    error: str = ""


class Load:
    """Threads that keep asking for `user`'s answer and record which revision gave it."""

    def __init__(self, engine: InferenceEngine, user: str, threads: int = 4) -> None:
        self.engine, self.user = engine, user
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, i: int) -> None:
        while not self._stop.is_set():
            at = time.monotonic()
            params = SamplingParams(max_tokens=6 + 6 * (i % 3))  # mixed lengths: some in flight
            try:
                gen = self.engine.submit(GenerateRequest("t1", self.user, "load", params))
                res = gen.result()
                self.outcomes.append(Outcome(at, res.revision.name, True))
            except Exception as exc:
                self.outcomes.append(Outcome(at, "", False, repr(exc)))

    def wait_past(self, t: float, timeout_s: float = 20.0) -> None:
        """Until some request submitted after `t` has finished."""
        deadline = time.monotonic() + timeout_s
        while not any(o.submitted > t for o in list(self.outcomes)):
            if time.monotonic() > deadline:
                raise AssertionError("the load made no progress")
            time.sleep(0.05)


@pytest.fixture()
def follower(stack: StackInfo, engine: InferenceEngine) -> Iterator[tuple[KafkaProducer, str]]:
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        topic_interactions=f"t.{suffix}.i",
        topic_interactions_dlq=f"t.{suffix}.d",
        topic_training_requests=f"t.{suffix}.t",
        topic_revisions=f"t.{suffix}.revisions",
        topic_partitions=2,
    )
    ensure_topics(stack.kafka_bootstrap, settings)
    kf = KafkaRevisionFollower(
        RevisionFollower(engine.resolver, engine.residency),
        bootstrap=stack.kafka_bootstrap,
        topic=settings.topic_revisions,
    ).start()
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0)
    yield producer, settings.topic_revisions
    producer.close()
    kf.stop()


def _publish(producer: KafkaProducer, topic: str, user: str, event_type: str) -> float:
    value = json.dumps({"event_type": event_type, "tenant_id": "t1", "user_id": user}).encode()
    producer.send(topic, key=f"t1/{user}".encode(), value=value).get(timeout=10)
    return time.monotonic()


def _assert_switched(load: Load, published: float, want: str) -> None:
    load.wait_past(published + SWAP_BUDGET_S)
    after = [o for o in list(load.outcomes) if o.submitted > published + SWAP_BUDGET_S]
    assert after and all(o.revision == want for o in after), {o.revision for o in after}


def test_promotion_rollback_forget_under_load(
    engine: InferenceEngine, served3: Served3, follower: tuple[KafkaProducer, str]
) -> None:
    producer, topic = follower
    old = served3.table[("t1", "ann")]
    new = Served("rev-ann-2", served3.digests["bob"], "personal")  # any valid blob will do
    # a long request on the old revision, in flight across the swap
    long_gen = engine.submit(
        GenerateRequest("t1", "ann", "in flight", SamplingParams(max_tokens=60))
    )
    with Load(engine, "ann") as load:
        load.wait_past(time.monotonic())
        served3.table[("t1", "ann")] = new  # the projection says: promoted
        promoted = _publish(producer, topic, "ann", "revision.promoted")
        _assert_switched(load, promoted, "rev-ann-2")
        served3.table[("t1", "ann")] = old  # rolled back
        rolled = _publish(producer, topic, "ann", "revision.rolled_back")
        _assert_switched(load, rolled, "rev-ann-1")
    assert load.outcomes and all(o.ok for o in load.outcomes), [
        o.error for o in load.outcomes if not o.ok
    ][:3]
    in_flight = long_gen.result()
    assert in_flight.revision.name == "rev-ann-1"
    assert in_flight.text == greedy(served3.peft["ann"], "in flight", 60)
    # the swapped-in adapter is really the one computing: ann now answers like bob's blob
    served3.table[("t1", "ann")] = new
    _publish(producer, topic, "ann", "revision.promoted")
    deadline = time.monotonic() + SWAP_BUDGET_S + 1
    while engine.resolver.get("t1", "ann").name != "rev-ann-2" and time.monotonic() < deadline:
        time.sleep(0.05)
    res = engine.submit(
        GenerateRequest("t1", "ann", "check", SamplingParams(max_tokens=8))
    ).result()
    assert res.revision.name == "rev-ann-2"
    assert res.text == greedy(served3.peft["bob"], "check", 8)
    # forgetting: ann falls back to base and her adapters leave every cache
    served3.table[("t1", "ann")] = BASE
    served3.table[("t1", "bob")] = BASE  # bob's blob was ann's too in this test
    _publish(producer, topic, "bob", "revision.rolled_back")
    _publish(producer, topic, "ann", "user.forgotten")
    deadline = time.monotonic() + SWAP_BUDGET_S
    digests = {served3.digests["ann"], served3.digests["bob"]}
    while any(any(engine.residency.resident(d)) for d in digests):
        assert time.monotonic() < deadline, [engine.residency.resident(d) for d in digests]
        time.sleep(0.05)
    res = engine.submit(
        GenerateRequest("t1", "ann", "check", SamplingParams(max_tokens=8))
    ).result()
    assert res.revision.source == "base" and res.text == greedy(served3.base, "check", 8)
