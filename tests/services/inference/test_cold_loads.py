"""Cold loads off the decode thread, residency accounting, and prefetch from the stream."""

from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from kafka import KafkaProducer

from tessera.events.kafka import ensure_topics
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings
from tessera.services.inference.adapter_loader import AdapterLoader
from tessera.services.inference.build import build_engine
from tessera.services.inference.cold_loads import ColdLoads
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.lora_layers import wrap_model
from tessera.services.inference.prefetch import KafkaPrefetcher, Prefetcher
from tessera.services.inference.requests import GenerateRequest, Generation
from tessera.services.inference.residency import AdapterResidency
from tessera.services.inference.revisions import RevisionResolver, Served
from tessera.services.inference.sampling import SamplingParams

from .conftest import Served3, engine_settings
from .helpers import DirStore, byte_tokenizer, make_peft, save_blob, tiny_model

TARGETS = ["q_proj", "v_proj"]


class GatedStore(DirStore):
    """A store whose reads of one digest block until `gate` opens (a slow disk)."""

    def __init__(self, root: Path, slow: str) -> None:
        super().__init__(root)
        self.slow = slow
        self.gate = threading.Event()
        self.entered = threading.Event()

    def path(self, digest: str) -> Path:
        if digest == self.slow:
            self.entered.set()
            self.gate.wait(30.0)
        return super().path(digest)


class SlowStore(DirStore):
    """A store whose every read takes `delay_s` (a real disk's latency, not a stall)."""

    def __init__(self, root: Path, delay_s: float) -> None:
        super().__init__(root)
        self.delay_s = delay_s

    def path(self, digest: str) -> Path:
        time.sleep(self.delay_s)
        return super().path(digest)


@dataclass
class _Parked:
    gen: Generation
    slot: int = -1


def _blobs(folder: Path, n: int) -> list[str]:
    base = tiny_model()
    return [
        save_blob(
            make_peft(base, seed + 1, r=2, alpha=4, targets=TARGETS),
            folder,
            r=2,
            alpha=4,
            targets=TARGETS,
        )[1]
        for seed in range(n)
    ]


def _residency(store: DirStore, *, slots: int, cpu: int) -> AdapterResidency:
    table = wrap_model(tiny_model(), target_modules=TARGETS, n_slots=slots, max_rank=4)
    return AdapterResidency(table, store, cpu_capacity=cpu, dtype=torch.float32)


def test_slot_and_cpu_hits_are_counted_apart(tmp_path: Path) -> None:
    d = _blobs(tmp_path, 3)
    res = _residency(DirStore(tmp_path), slots=1, cpu=2)
    assert res.try_acquire(d[0]) is None  # cold: nothing read on this thread
    assert (res.misses, res.cpu_misses, res.loads) == (1, 1, 0)
    slot = res.place(res.load_cpu(d[0]))
    res.release(slot)
    assert res.try_acquire(d[0]) == slot and res.hits == 1  # on its slot
    res.release(slot)
    res.release(res.acquire(d[1]))  # evicts d[0] from the only slot; both in the CPU cache
    assert res.try_acquire(d[0]) == slot  # back from the CPU cache, no store read
    assert (res.hits, res.misses, res.cpu_hits, res.cpu_misses, res.loads) == (1, 3, 1, 2, 2)
    res.release(slot)
    res.release(res.acquire(d[2]))  # CPU cache holds 2: d[1], the least recent, goes
    assert res.resident(d[1]) == (False, False) and res.try_acquire(d[1]) is None
    assert res.cpu_misses == 4


def test_loader_shares_reads_puts_demand_first_and_drops_prefetch_when_full(
    tmp_path: Path,
) -> None:
    d = _blobs(tmp_path, 4)
    store = GatedStore(tmp_path, d[0])
    res = _residency(store, slots=2, cpu=4)
    loader = AdapterLoader(res, threads=1, prefetch_queue=1).start()
    try:
        first = loader.load(d[0])  # occupies the only thread until the gate opens
        assert store.entered.wait(10)
        assert loader.load(d[0]) is first  # the same read, not a second one
        assert loader.prefetch(d[1]) is True
        assert loader.prefetch(d[2]) is False and loader.prefetch_dropped == 1  # queue full
        demand = loader.load(d[3])
        assert loader.queued == (1, 1)
        store.gate.set()
        assert demand.result(10).digest == d[3]
        assert first.result(10).digest == d[0]
        deadline = time.monotonic() + 10
        while not res.resident(d[1])[0]:
            assert time.monotonic() < deadline, "the prefetch never ran"
            time.sleep(0.01)
        assert res.touch(d[1]) and loader.prefetch(d[1]) is False  # cached: only touched
        assert store.reads == 3 and not res.resident(d[2])[0]
    finally:
        loader.stop()


@pytest.mark.parametrize("grace_s", [0.0, 5.0])
def test_a_read_that_lands_within_the_grace_joins_this_boundary(
    tmp_path: Path, grace_s: float
) -> None:
    """Parked at a step boundary, a request whose read takes 50 ms is placed at that same
    boundary when the engine grants the reads a grace, and only at the next one without."""
    digest = _blobs(tmp_path, 1)[0]
    res = _residency(SlowStore(tmp_path, 0.05), slots=1, cpu=1)
    loader = AdapterLoader(res, threads=1).start()
    cold: ColdLoads[_Parked] = ColdLoads(loader)
    request = GenerateRequest("t1", "ann", "hi", SamplingParams(max_tokens=1))
    seq = _Parked(Generation(request, Served("rev-ann-1", digest, "personal"), 30.0))
    try:
        cold.park(seq, digest)
        assert cold.await_fresh(grace_s) is True  # a read was started at this boundary
        placed, failed = cold.take(4)
        assert not failed
        if grace_s:
            assert placed == [seq] and seq.slot >= 0 and len(cold) == 0
            assert seq.gen.cold_load_s is not None and seq.gen.cold_load_s >= 0.05
        else:
            assert placed == [] and len(cold) == 1 and seq.gen.cold_load_s is None
        assert cold.await_fresh(grace_s) is False  # nothing parked since: no wait
    finally:
        loader.stop()


def _parked(digest: str, user: str = "ann") -> _Parked:
    request = GenerateRequest("t1", user, "hi", SamplingParams(max_tokens=1))
    return _Parked(Generation(request, Served(f"rev-{user}-1", digest, "personal"), 30.0))


def _wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_the_loader_places_a_landed_read_without_waiting_for_a_boundary(tmp_path: Path) -> None:
    """The cold load ends when the weights are on a slot: the loader thread places them as
    the read lands, pinned for the parked request, and `take` only hands the slot over."""
    digest = _blobs(tmp_path, 1)[0]
    res = _residency(SlowStore(tmp_path, 0.05), slots=1, cpu=1)
    loader = AdapterLoader(res, threads=1).start()
    cold: ColdLoads[_Parked] = ColdLoads(loader)
    seq = _parked(digest)
    try:
        cold.park(seq, digest)
        assert cold.await_fresh(0.0) is True  # no grace: the boundary does not wait
        _wait_until(lambda: seq.gen.cold_load_s is not None, "the read was never placed")
        assert res.resident(digest) == (True, True) and res.pins(0) == 1
        assert seq.slot == -1  # the request is not in the batch yet
        placed, failed = cold.take(4)
        assert placed == [seq] and not failed and seq.slot == 0 and res.pins(0) == 1
        assert seq.gen.cold_load_s is not None and 0.05 <= seq.gen.cold_load_s < 5
    finally:
        loader.stop()


def test_a_request_gone_before_its_turn_unpins_its_early_slot(tmp_path: Path) -> None:
    digest = _blobs(tmp_path, 1)[0]
    res = _residency(DirStore(tmp_path), slots=1, cpu=1)
    loader = AdapterLoader(res, threads=1).start()
    cold: ColdLoads[_Parked] = ColdLoads(loader)
    seq = _parked(digest)
    try:
        cold.park(seq, digest)
        _wait_until(lambda: res.pins(0) == 1, "the read was never placed")
        cold.sweep(lambda s: s is seq)  # cancelled while parked
        assert len(cold) == 0 and res.pins(0) == 0 and seq.slot == -1
        assert cold.take(4) == ([], [])
    finally:
        loader.stop()


def test_a_read_landing_on_a_full_table_waits_in_memory_for_a_free_slot(
    tmp_path: Path,
) -> None:
    d = _blobs(tmp_path, 2)
    res = _residency(DirStore(tmp_path), slots=1, cpu=2)
    busy = res.acquire(d[0])  # a running sequence pins the only slot
    loader = AdapterLoader(res, threads=1).start()
    cold: ColdLoads[_Parked] = ColdLoads(loader)
    seq = _parked(d[1], "bob")
    try:
        cold.park(seq, d[1])
        _wait_until(lambda: res.resident(d[1])[0], "the read never reached the CPU cache")
        assert cold.take(4) == ([], []) and len(cold) == 1  # no slot to place it in
        assert seq.gen.cold_load_s is None and res.resident(d[0]) == (True, True)
        res.release(busy)
        placed, failed = cold.take(4)
        assert placed == [seq] and not failed and seq.slot == busy
        assert res.resident(d[1]) == (True, True) and seq.gen.cold_load_s is not None
    finally:
        loader.stop()


def test_cold_load_does_not_stall_resident_rows(served3: Served3, tmp_path: Path) -> None:
    store = GatedStore(served3.store.root, served3.digests["bob"])
    eng = build_engine(
        copy.deepcopy(served3.base),
        byte_tokenizer(),
        store,
        served3.lookup,
        settings=engine_settings(),
    ).start()
    # opens the gate only if the engine is stuck behind bob's read (the bug this catches)
    opener = threading.Timer(120.0, store.gate.set)
    try:
        params = SamplingParams(max_tokens=24)
        eng.submit(GenerateRequest("t1", "ann", "warm", params)).result()  # ann resident
        cold = eng.submit(GenerateRequest("t1", "bob", "hello", params))
        assert store.entered.wait(30)  # bob's read has started, and blocks
        opener.start()
        hot = eng.submit(GenerateRequest("t1", "ann", "hello there", params)).result()
        assert not store.gate.is_set(), "ann's request waited for bob's cold load"
        assert hot.completion_tokens >= 1 and eng.residency.resident(served3.digests["ann"])[1]
        assert cold.cold_load_s is None and eng.waiting == 0
        store.gate.set()
        bob = cold.result()
        assert bob.revision.revision_id == "rev-bob-1" and bob.completion_tokens >= 1
        assert cold.cold_load_s is not None and cold.cold_load_s > 0
        assert eng.residency.cpu_misses == 2  # ann's first request and bob's, no others
    finally:
        opener.cancel()
        store.gate.set()
        eng.stop()


def test_a_failed_cold_load_fails_only_its_request(
    served3: Served3, engine: InferenceEngine
) -> None:
    (served3.store.root / f"{served3.digests['cyd']}.safetensors").unlink()
    params = SamplingParams(max_tokens=4)
    bad = engine.submit(GenerateRequest("t1", "cyd", "hi", params))
    good = engine.submit(GenerateRequest("t1", "ann", "hi", params))
    with pytest.raises(ValueError, match="cannot be served"):
        bad.result()
    assert good.result().completion_tokens >= 1


@pytest.mark.integration
def test_prefetcher_warms_the_adapter_from_a_kafka_event(
    stack: StackInfo, served3: Served3, engine: InferenceEngine
) -> None:
    suffix = uuid.uuid4().hex[:10]
    settings = Settings(
        topic_interactions=f"t.{suffix}.interactions",
        topic_interactions_dlq=f"t.{suffix}.d",
        topic_training_requests=f"t.{suffix}.t",
        topic_revisions=f"t.{suffix}.r",
        topic_partitions=2,
    )
    ensure_topics(stack.kafka_bootstrap, settings)
    seen_only = Prefetcher(engine.resolver, engine.loader, scope="seen")
    assert seen_only.on_event("t1", "cyd") is False  # this replica never answered cyd
    prefetcher = Prefetcher(engine.resolver, engine.loader, scope="all")
    tail = KafkaPrefetcher(
        prefetcher, bootstrap=stack.kafka_bootstrap, topic=settings.topic_interactions
    ).start()
    producer = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap, linger_ms=0)
    try:
        digest = served3.digests["bob"]
        assert engine.residency.resident(digest) == (False, False)
        event = {"event_type": "interaction.exchange", "tenant_id": "t1", "user_id": "bob"}
        producer.send(
            settings.topic_interactions, key=b"t1/bob", value=json.dumps(event).encode()
        ).get(timeout=10)
        deadline = time.monotonic() + 15
        while not engine.residency.resident(digest)[0]:
            assert time.monotonic() < deadline, "the event did not warm bob's adapter"
            time.sleep(0.05)
        assert prefetcher.hinted == 1 and engine.residency.resident(digest) == (True, False)
        gen = engine.submit(GenerateRequest("t1", "bob", "hi", SamplingParams(max_tokens=2)))
        gen.result()
        assert gen.cold_load_s is None  # the request found it in memory
        assert (engine.residency.cpu_hits, engine.residency.cpu_misses) == (1, 0)
    finally:
        producer.close()
        tail.stop()


def test_prefetch_scope_seen_follows_the_resolver(served3: Served3) -> None:
    res = _residency(served3.store, slots=1, cpu=1)
    resolver = RevisionResolver(served3.lookup, ttl_s=60)
    loader = AdapterLoader(res)  # not started: hints only queue up
    seen = Prefetcher(resolver, loader, scope="seen")
    assert seen.on_event("t1", "ann") is False and seen.hinted == 0
    resolver.get("t1", "ann")  # a request of ann's reached this replica
    assert seen.on_event("t1", "ann") is True and loader.queued == (0, 1)
    assert Prefetcher(resolver, loader, scope="off").on_event("t1", "ann") is False
    assert Prefetcher(resolver, loader).on_event("t1", "nobody") is False  # base model
