"""Requests waiting for their adapter to be read from the store, apart from the batch.

The engine parks a request here when its adapter is neither on a device slot nor in the
CPU cache; a loader thread reads it (`AdapterLoader.load`) while the batch keeps
decoding, and between two steps the engine `take`s the requests whose read finished,
each placed into a device slot. The wait (store -> CPU cache -> slot) is recorded on the
request (`Generation.cold_load_s`) and in `tessera_adapter_cold_load_seconds`.

Requests are parked at a step boundary, so without more a cold load would cost a whole
step even when the read takes a millisecond (a CPU decode step of a full batch takes
~100 ms): the engine gives the reads it has just started a short grace (`await_fresh`,
`TESSERA_INFERENCE_COLD_LOAD_GRACE_MS`) before the batch steps on; a read that lands in
time joins this boundary, a slow one (a slow disk) costs the batch only the grace.
Engine thread only, except `__len__` (submit's back-pressure reads it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import Generic, Protocol, TypeVar

from prometheus_client import Histogram

from tessera.services.inference.adapter_loader import AdapterLoader
from tessera.services.inference.lora_layers import LoadedAdapter
from tessera.services.inference.requests import Generation
from tessera.services.inference.residency import SlotsBusyError

COLD_LOAD_SECONDS = Histogram(
    "tessera_adapter_cold_load_seconds",
    "A request's wait for an adapter not in memory: store -> CPU cache -> device slot.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


class _Waiter(Protocol):
    gen: Generation
    slot: int


S = TypeVar("S", bound=_Waiter)


class ColdLoads(Generic[S]):
    """The parked requests of one engine, in arrival order."""

    def __init__(self, loader: AdapterLoader) -> None:
        self.loader = loader
        self._parked: list[tuple[S, Future[LoadedAdapter], float]] = []
        self._fresh: list[Future[LoadedAdapter]] = []  # reads parked since `await_fresh`

    def __len__(self) -> int:
        return len(self._parked)

    @property
    def ready(self) -> bool:
        """Whether some parked request's adapter has been read (or failed to be)."""
        return any(load.done() for _, load, _ in self._parked)

    def park(self, seq: S, digest: str) -> None:
        load = self.loader.load(digest)
        self._parked.append((seq, load, time.monotonic()))
        self._fresh.append(load)

    def await_fresh(self, grace_s: float) -> bool:
        """Wait up to `grace_s` for the reads parked since the last call; True when some
        were parked (so a `take` may now place them)."""
        fresh, self._fresh = self._fresh, []
        if fresh and grace_s > 0:
            wait(fresh, timeout=grace_s)
        return bool(fresh)

    def sweep(self, dead: Callable[[S], bool]) -> None:
        """Forget the requests `dead` says are gone (it finishes them: cancelled, expired)."""
        self._parked = [p for p in self._parked if not dead(p[0])]

    def take(self, room: int) -> tuple[list[S], list[tuple[S, Exception]]]:
        """Up to `room` requests whose adapter is read, each now pinning a device slot
        (`seq.slot`); and the requests whose read failed, to be failed by the caller."""
        placed: list[S] = []
        failed: list[tuple[S, Exception]] = []
        keep: list[tuple[S, Future[LoadedAdapter], float]] = []
        for seq, load, since in self._parked:
            if len(placed) >= room or not load.done():
                keep.append((seq, load, since))
                continue
            try:
                seq.slot = self.loader.residency.place(load.result())
            except SlotsBusyError:  # every slot pinned: try again after a step
                keep.append((seq, load, since))
                continue
            except Exception as exc:  # missing / corrupt blob: that request only
                failed.append((seq, exc))
                continue
            seq.gen.cold_load_s = time.monotonic() - since
            COLD_LOAD_SECONDS.observe(seq.gen.cold_load_s)
            placed.append(seq)
        self._parked = keep
        return placed, failed

    def drain(self) -> list[S]:
        """Every parked request, forgotten (the engine is failing them all)."""
        seqs = [p[0] for p in self._parked]
        self._parked, self._fresh = [], []
        return seqs
