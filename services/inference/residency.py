"""Adapter residency: device slots <- CPU LRU of loaded adapters <- content-addressed store.

- `acquire(digest)` returns a device slot holding the adapter and pins it (one pin per
  sequence using it); `release(slot)` unpins. Only unpinned slots are ever evicted, so a
  running sequence never sees its adapter change under it.
- A missing adapter is read from the store (which verifies the sha256), parsed and
  checked against the model *before* any slot is evicted or overwritten: a bad blob
  fails its own request and leaves the residents alone.
- `purge(digests)` (forgetting) drops adapters from the CPU cache at once and zeroes their
  device slots as soon as no sequence pins them.

The engine never reads the store on its own thread: it calls `try_acquire`, which
places an adapter already in memory and returns None for one that needs a store read;
that read runs on the `AdapterLoader`'s threads, and `place` puts the loaded adapter
into a slot once it is ready. `acquire` is both in one blocking call (follower, tests).

Counters: `hits`/`misses` (device slot found or not); of the misses, `cpu_hits` (the CPU
cache had it) and `cpu_misses` (a cold load from the store); `loads` (blobs read from
the store, prefetches included), `evictions` (device slots taken from another adapter),
also exported to Prometheus as `tessera_adapter_residency_total{event}`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Protocol

import torch
from prometheus_client import Counter, Gauge

from tessera.services.inference.adapters import adapter_from_tensors, read_blob
from tessera.services.inference.lora_layers import LoadedAdapter, LoraSlotTable

RESIDENCY_EVENTS = Counter("tessera_adapter_residency", "Adapter residency events.", ["event"])
RESIDENT_ADAPTERS = Gauge("tessera_adapter_resident", "Adapters resident, by tier.", ["tier"])


class AdapterSource(Protocol):
    """Where blobs live: `path(digest)` returns a local file whose sha256 is `digest`,
    raising if the blob is missing or its content does not match."""

    def path(self, digest: str) -> Path: ...


class SlotsBusyError(RuntimeError):
    """Every device slot is pinned by a running sequence; retry after a step."""


class AdapterResidency:
    """The slot table's occupant bookkeeping; thread-safe (engine + revision follower)."""

    def __init__(
        self, table: LoraSlotTable, store: AdapterSource, *, cpu_capacity: int, dtype: torch.dtype
    ) -> None:
        if cpu_capacity < 1:
            raise ValueError("cpu_capacity must be >= 1")
        self._table = table
        self._store = store
        self._cpu_capacity = cpu_capacity
        self._dtype = dtype
        self._lock = threading.RLock()
        self._cpu: OrderedDict[str, LoadedAdapter] = OrderedDict()
        self._slot_of: dict[str, int] = {}
        self._occupant: list[str | None] = [None] * table.n_slots
        self._pins = [0] * table.n_slots
        # device slots in least-recently-used order (front = evict first)
        self._slot_lru: OrderedDict[int, None] = OrderedDict(
            (s, None) for s in range(table.n_slots)
        )
        self._purged: set[str] = set()
        self.hits = self.misses = self.loads = self.evictions = 0
        self.cpu_hits = self.cpu_misses = 0

    # ---- CPU tier -------------------------------------------------------------------

    def load_cpu(self, digest: str) -> LoadedAdapter:
        """The adapter in memory: from the LRU, else read, verified and checked from the
        store. Raises (store errors, AdapterFormatError, ValueError) without side effects."""
        with self._lock:
            cached = self._cpu.get(digest)
            if cached is not None:
                self._cpu.move_to_end(digest)
                return cached
        # read outside the lock: a slow disk must not stall the decode loop
        path = self._store.path(digest)
        tensors, meta = read_blob(path)
        adapter = adapter_from_tensors(
            digest, tensors, meta, module_names=self._table.layers, dtype=self._dtype
        )
        self._table.check(adapter)
        with self._lock:
            self.loads += 1
            RESIDENCY_EVENTS.labels("load").inc()
            self._purged.discard(digest)
            self._cpu[digest] = adapter
            self._cpu.move_to_end(digest)
            while len(self._cpu) > self._cpu_capacity:
                self._cpu.popitem(last=False)
            RESIDENT_ADAPTERS.labels("cpu").set(len(self._cpu))
        return adapter

    # ---- device tier ----------------------------------------------------------------

    def acquire(self, digest: str) -> int:
        """A pinned device slot holding `digest`, reading the store if need be (blocking).
        Raises SlotsBusyError when every slot is pinned by other adapters; store and
        format errors pass through, and nothing is evicted for a blob that fails."""
        slot = self.try_acquire(digest)
        if slot is not None:
            return slot
        return self.place(self.load_cpu(digest))

    def try_acquire(self, digest: str) -> int | None:
        """A pinned slot for an adapter on a slot or in the CPU cache; None when it needs
        a store read (counted as a cold miss: do the read off the decode thread, then
        `place`). Raises SlotsBusyError when every slot is pinned; never reads the store."""
        with self._lock:
            slot = self._slot_of.get(digest)
            if slot is not None:
                self.hits += 1
                RESIDENCY_EVENTS.labels("hit").inc()
                self._pin(slot)
                return slot
            if self._free_slot() is None:
                raise SlotsBusyError(f"all {self._table.n_slots} adapter slots are in use")
            self.misses += 1
            RESIDENCY_EVENTS.labels("miss").inc()
            cached = self._cpu.get(digest)
            if cached is None:
                self.cpu_misses += 1
                RESIDENCY_EVENTS.labels("cpu_miss").inc()
                return None
            self.cpu_hits += 1
            RESIDENCY_EVENTS.labels("cpu_hit").inc()
            self._cpu.move_to_end(digest)
            return self._place_locked(cached)

    def place(self, adapter: LoadedAdapter) -> int:
        """A pinned slot holding `adapter` (already verified and checked by `load_cpu`).
        Raises SlotsBusyError when every slot is pinned by other adapters."""
        with self._lock:
            slot = self._slot_of.get(adapter.digest)  # placed meanwhile by another request
            if slot is not None:
                self._pin(slot)
                return slot
            return self._place_locked(adapter)

    def _place_locked(self, adapter: LoadedAdapter) -> int:
        slot = self._free_slot()
        if slot is None:
            raise SlotsBusyError(f"all {self._table.n_slots} adapter slots are in use")
        old = self._occupant[slot]
        if old is not None:
            del self._slot_of[old]
            self.evictions += 1
            RESIDENCY_EVENTS.labels("eviction").inc()
        self._table.load(slot, adapter)
        self._occupant[slot] = adapter.digest
        self._slot_of[adapter.digest] = slot
        self._pin(slot)
        RESIDENT_ADAPTERS.labels("device").set(len(self._slot_of))
        return slot

    def release(self, slot: int) -> None:
        """Unpin one use of `slot`; a purged adapter's slot is zeroed at its last release."""
        with self._lock:
            if self._pins[slot] <= 0:
                raise RuntimeError(f"slot {slot} released more often than acquired")
            self._pins[slot] -= 1
            occupant = self._occupant[slot]
            if self._pins[slot] == 0 and occupant in self._purged:
                self._drop_slot(slot)

    def purge(self, digests: set[str]) -> None:
        """Forget adapters: out of the CPU cache now, off the device once unpinned."""
        with self._lock:
            for digest in digests:
                self._cpu.pop(digest, None)
                slot = self._slot_of.get(digest)
                if slot is None:
                    continue
                if self._pins[slot] == 0:
                    self._drop_slot(slot)
                else:
                    self._purged.add(digest)
            RESIDENT_ADAPTERS.labels("cpu").set(len(self._cpu))

    def touch(self, digest: str) -> bool:
        """Mark `digest` recently used in the CPU cache; False when it is not cached."""
        with self._lock:
            if digest not in self._cpu:
                return False
            self._cpu.move_to_end(digest)
            return True

    def resident(self, digest: str) -> tuple[bool, bool]:
        """(in the CPU cache, on a device slot) for `digest`."""
        with self._lock:
            return digest in self._cpu, digest in self._slot_of

    def pins(self, slot: int) -> int:
        with self._lock:
            return self._pins[slot]

    # ---- internals (lock held) --------------------------------------------------------

    def _pin(self, slot: int) -> None:
        self._pins[slot] += 1
        self._slot_lru.move_to_end(slot)

    def _free_slot(self) -> int | None:
        """An empty slot if any, else the least recently used unpinned one."""
        for slot, occupant in enumerate(self._occupant):
            if occupant is None:
                return slot
        for slot in self._slot_lru:
            if self._pins[slot] == 0:
                return slot
        return None

    def _drop_slot(self, slot: int) -> None:
        occupant = self._occupant[slot]
        if occupant is not None:
            self._slot_of.pop(occupant, None)
            self._purged.discard(occupant)
        self._occupant[slot] = None
        self._table.clear(slot)
        RESIDENT_ADAPTERS.labels("device").set(len(self._slot_of))
