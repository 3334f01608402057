"""Residency: LRU slots, pinning, verification before eviction, purge, counters."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from tessera.services.inference.lora_layers import wrap_model
from tessera.services.inference.residency import AdapterResidency, SlotsBusyError

from .helpers import DirStore, make_peft, save_blob, tiny_model

TARGETS = ["q_proj", "v_proj"]


@pytest.fixture()
def setup(tmp_path: Path) -> tuple[AdapterResidency, DirStore, list[str], torch.nn.Module]:
    base = tiny_model()
    digests = []
    for seed in range(4):
        pm = make_peft(base, seed + 1, r=2, alpha=4, targets=TARGETS)
        _, digest = save_blob(pm, tmp_path, r=2, alpha=4, targets=TARGETS)
        digests.append(digest)
    served = copy.deepcopy(base)
    table = wrap_model(served, target_modules=TARGETS, n_slots=2, max_rank=4)
    store = DirStore(tmp_path)
    return (
        AdapterResidency(table, store, cpu_capacity=3, dtype=torch.float32),
        store,
        digests,
        served,
    )


def test_hits_misses_lru_and_pinning(setup) -> None:  # type: ignore[no-untyped-def]
    res, store, d, _ = setup
    s0 = res.acquire(d[0])
    s1 = res.acquire(d[1])
    assert s0 != s1 and (res.hits, res.misses, res.loads) == (0, 2, 2)
    assert res.acquire(d[0]) == s0 and res.hits == 1  # second pin on the same slot
    with pytest.raises(SlotsBusyError):
        res.acquire(d[2])  # both slots pinned
    res.release(s1)
    s2 = res.acquire(d[2])  # evicts d[1], the only unpinned slot
    assert s2 == s1 and res.evictions == 1
    assert res.resident(d[1]) == (True, False)  # still in the CPU cache
    res.release(s2)
    res.release(s0)
    res.release(s0)
    # d[1] comes back from the CPU cache: no new store read
    reads = store.reads
    s3 = res.acquire(d[1])
    assert store.reads == reads and res.loads == 3
    res.release(s3)
    with pytest.raises(RuntimeError, match="released more often"):
        res.release(s3)


def test_bad_blob_evicts_nothing(setup, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    res, _, d, _ = setup
    s0 = res.acquire(d[0])
    s1 = res.acquire(d[1])
    res.release(s0)
    res.release(s1)
    blob = tmp_path / f"{d[2]}.safetensors"
    blob.write_bytes(blob.read_bytes()[:-8] + b"corrupt!")
    with pytest.raises(ValueError, match="digest mismatch"):
        res.acquire(d[2])
    assert res.resident(d[0]) == (True, True) and res.resident(d[1]) == (True, True)
    assert res.evictions == 0
    with pytest.raises(FileNotFoundError):
        res.acquire("0" * 64)


def test_purge_waits_for_pins(setup) -> None:  # type: ignore[no-untyped-def]
    res, _, d, _served = setup
    s0 = res.acquire(d[0])
    res.purge({d[0]})
    assert res.resident(d[0]) == (False, True)  # a running sequence still uses it
    res.release(s0)
    assert res.resident(d[0]) == (False, False)
    layer = next(iter(res._table.layers.values()))
    assert float(layer.lora_a[s0].abs().sum()) == 0.0  # the weights are gone from the slot
