"""A running inference server (tiny model, real engine, revision follower on the broker,
request log in PostgreSQL) follows a rollback within 2 s and purges a forgotten user's
adapters from its caches; the request audit names the revision that answered."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings
from tessera.services.audit.queries import request_audit
from tessera.services.corrective import CorrectiveActions
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.requests import GenerateRequest
from tessera.services.inference.sampling import SamplingParams
from tessera.services.inference.tokens import HFTokenizer
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import TARGETS, interactions, marker, revision

T, U = "acme", "alice"
FOLLOW_WITHIN_S = 2.0


@pytest.fixture()
def engine(
    tmp_path: Path,
    database_url: str,
    stack: StackInfo,
    revisions_topic: str,
    adapters: LocalAdapterStore,
) -> Iterator[InferenceEngine]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tessera.bench.tiny_model import build_tiny_model
    from tessera.services.inference.build import build_engine
    from tessera.services.inference.component import projection_lookup
    from tessera.services.inference.request_log import PostgresRequestLog
    from tessera.services.inference.revision_follower import (
        KafkaRevisionFollower,
        RevisionFollower,
    )

    folder = build_tiny_model(tmp_path / "tiny")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    settings = Settings(
        inference_device_slots=4, inference_max_rank=4, inference_cpu_adapters=8,
        inference_target_modules=TARGETS, inference_max_batch=4, inference_max_tokens=8,
        # A long TTL: only the follower can make the switch within the deadline.
        inference_revision_cache_s=600.0,
    )
    request_log = PostgresRequestLog(database_url)
    lookup = projection_lookup(database_url)
    eng = build_engine(model, cast(HFTokenizer, tokenizer), adapters, lookup,
                       settings=settings, request_log=request_log).start()
    follower = KafkaRevisionFollower(
        RevisionFollower(eng.resolver, eng.residency),
        bootstrap=stack.kafka_bootstrap, topic=revisions_topic,
    ).start()
    yield eng
    follower.stop()
    eng.stop()
    request_log.close()


def _generate(engine: InferenceEngine) -> tuple[str, str | None]:
    gen = engine.submit(GenerateRequest(T, U, "hello there", SamplingParams(max_tokens=4)))
    gen.result()
    return gen.request_id, gen.revision.revision_id


def _within(deadline_s: float, check: Callable[[], bool]) -> float:
    """Seconds until `check()` holds; fails the test after `deadline_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > deadline_s:
            pytest.fail(f"not within {deadline_s} s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_server_follows_rollback_and_purges_on_forget(
    engine: InferenceEngine,
    store: PostgresEventStore,
    adapters: LocalAdapterStore,
    actions: CorrectiveActions,
) -> None:
    interactions(store, T, U, [marker("s")])
    r1 = revision(store, adapters, T, U, parent=None)
    r2 = revision(store, adapters, T, U, parent=r1.revision_id)
    first_id, answered = _generate(engine)
    assert answered == r2.revision_id
    assert engine.residency.resident(r2.digest) == (True, True)

    started = time.monotonic()  # the deadline counts the action itself too
    actions.rollback(T, U, reason="r2 misbehaves", actor="ops")
    _within(FOLLOW_WITHIN_S, lambda: engine.resolver.get(T, U).revision_id == r1.revision_id)
    took = time.monotonic() - started
    assert took < FOLLOW_WITHIN_S
    second_id, answered = _generate(engine)
    assert answered == r1.revision_id, f"switched in {took:.2f}s but served {answered}"

    # Both requests are in the request log, each with the revision that answered it.
    _within(10.0, lambda: store.get_request(second_id) is not None)
    assert request_audit(store, first_id).revision_id == r2.revision_id
    assert request_audit(store, second_id).revision_id == r1.revision_id

    started = time.monotonic()
    actions.forget(T, U, actor="dpo", reason="erasure")
    _within(FOLLOW_WITHIN_S, lambda: engine.resolver.get(T, U).source == "base")
    _within(FOLLOW_WITHIN_S, lambda: not any(
        any(engine.residency.resident(d)) for d in (r1.digest, r2.digest)))
    assert time.monotonic() - started < FOLLOW_WITHIN_S
    assert not {r1.digest, r2.digest} & engine.resolver.served_digests()
    _, answered = _generate(engine)
    assert answered is None  # the base model answers now
    assert store.get_request(first_id) is None  # forgetting also erased the request log
