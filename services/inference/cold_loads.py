"""Requests waiting for their adapter to be read from the store, apart from the batch.

The engine parks a request here when its adapter is neither on a device slot nor in the
CPU cache; a loader thread reads it (`AdapterLoader.load`) while the batch keeps
decoding. As soon as the read lands, the loader thread also places the adapter into a
free device slot (pinned for the request), so the cold load (store -> CPU cache -> slot)
ends when the weights are in place, not at the engine's next step boundary; between two
steps the engine `take`s the placed requests into the batch. Writing a slot while the
engine steps is safe because only an unpinned slot is ever (over)written, and the batch
reads only the slots its rows pin. When every slot is pinned the adapter stays in the CPU
cache and `take` places it at a later boundary. The wait is recorded on the request
(`Generation.cold_load_s`) and in `tessera_adapter_cold_load_seconds`.

A request parked at a step boundary would still join the batch one step late even when
its read takes a millisecond (a CPU decode step of a full batch takes ~100 ms): the
engine gives the reads it has just started a short grace (`await_fresh`,
`TESSERA_INFERENCE_COLD_LOAD_GRACE_MS`) before the batch steps on; a read that lands in
time joins this boundary, a slow one (a slow disk) costs the batch only the grace.
Engine thread only, except `__len__` (submit's back-pressure reads it) and the loader's
placement callback, which takes this object's lock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, wait
from dataclasses import dataclass
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


@dataclass
class _Parked(Generic[S]):
    seq: S
    load: Future[LoadedAdapter]
    since: float
    slot: int = -1  # pinned for `seq` once placed (by the loader thread or `take`)
    gone: bool = False  # swept or drained: a late placement must not pin for it


class ColdLoads(Generic[S]):
    """The parked requests of one engine, in arrival order."""

    def __init__(self, loader: AdapterLoader) -> None:
        self.loader = loader
        self._lock = threading.Lock()
        self._parked: list[_Parked[S]] = []
        self._fresh: list[Future[LoadedAdapter]] = []  # reads parked since `await_fresh`

    def __len__(self) -> int:
        return len(self._parked)

    @property
    def ready(self) -> bool:
        """Whether some parked request's adapter has been read (or failed to be)."""
        return any(p.load.done() for p in self._parked)

    def park(self, seq: S, digest: str) -> None:
        load = self.loader.load(digest)
        entry = _Parked(seq, load, time.monotonic())
        with self._lock:
            self._parked.append(entry)
        self._fresh.append(load)
        # runs on the loader thread when the read lands (here, at once, if it has)
        load.add_done_callback(lambda _: self._place(entry))

    def await_fresh(self, grace_s: float) -> bool:
        """Wait up to `grace_s` for the reads parked since the last call; True when some
        were parked (so a `take` may now place them)."""
        fresh, self._fresh = self._fresh, []
        if fresh and grace_s > 0:
            wait(fresh, timeout=grace_s)
        return bool(fresh)

    def sweep(self, dead: Callable[[S], bool]) -> None:
        """Forget the requests `dead` says are gone (it finishes them: cancelled, expired),
        unpinning the slot a placement took for them."""
        with self._lock:
            keep = []
            for entry in self._parked:
                if dead(entry.seq):
                    self._forget(entry)
                else:
                    keep.append(entry)
            self._parked = keep

    def take(self, room: int) -> tuple[list[S], list[tuple[S, Exception]]]:
        """Up to `room` requests whose adapter is read, each now pinning a device slot
        (`seq.slot`); and the requests whose read failed, to be failed by the caller."""
        placed: list[S] = []
        failed: list[tuple[S, Exception]] = []
        keep: list[_Parked[S]] = []
        with self._lock:
            for entry in self._parked:
                if len(placed) >= room or not entry.load.done():
                    keep.append(entry)
                    continue
                try:
                    self._place_locked(entry)
                except SlotsBusyError:  # every slot pinned: try again after a step
                    keep.append(entry)
                    continue
                except Exception as exc:  # missing / corrupt blob: that request only
                    failed.append((entry.seq, exc))
                    continue
                entry.seq.slot, entry.slot = entry.slot, -1
                placed.append(entry.seq)
            self._parked = keep
        return placed, failed

    def drain(self) -> list[S]:
        """Every parked request, forgotten (the engine is failing them all)."""
        with self._lock:
            for entry in self._parked:
                self._forget(entry)
            seqs = [entry.seq for entry in self._parked]
            self._parked, self._fresh = [], []
        return seqs

    # ---- internals -------------------------------------------------------------------

    def _place(self, entry: _Parked[S]) -> None:
        """The loader thread's placement as soon as the read lands; a failed read or a
        full table is left to `take`, which reports or retries it."""
        with self._lock:
            if entry.gone:
                return
            try:
                self._place_locked(entry)
            except Exception:  # `take` meets the same error and reports it
                return

    def _place_locked(self, entry: _Parked[S]) -> None:
        if entry.slot >= 0:
            return
        entry.slot = self.loader.residency.place(entry.load.result())
        entry.seq.gen.cold_load_s = time.monotonic() - entry.since
        COLD_LOAD_SECONDS.observe(entry.seq.gen.cold_load_s)

    def _forget(self, entry: _Parked[S]) -> None:
        entry.gone = True
        if entry.slot >= 0:
            self.loader.residency.release(entry.slot)
            entry.slot = -1
