"""Store -> CPU cache reads on their own threads: demand loads first, then prefetches.

The engine never reads the store on its decode thread. A request whose adapter is
neither on a device slot nor in the CPU cache waits, holding no batch row, for
`load(digest)`'s future while the other rows keep decoding; the loaded adapter goes
into a free device slot as soon as the read lands (services/inference/cold_loads.py).

Prefetches (`prefetch(digest)`, from the interaction stream) run on the same threads but
only when no demand load waits, and sit in a bounded queue: when it is full the hint is
dropped (counted), since a prefetch is a guess and must never delay a request or grow
memory without bound. A digest already being read is never read twice: later callers
share the first future, and a demand load for a queued prefetch moves it to the front.

Metrics: `tessera_adapter_prefetch_total{outcome}` (queued, resident, in_flight, dropped,
loaded, failed) and `tessera_adapter_load_seconds` (one store read, verify and parse).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future

from prometheus_client import Counter, Histogram

from tessera.services.inference.lora_layers import LoadedAdapter
from tessera.services.inference.residency import AdapterResidency

log = logging.getLogger(__name__)

PREFETCH = Counter("tessera_adapter_prefetch", "Adapter prefetch hints by outcome.", ["outcome"])
LOAD_SECONDS = Histogram(
    "tessera_adapter_load_seconds",
    "One adapter read from the store into the CPU cache (read, verify, parse).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
)


class LoaderStoppedError(RuntimeError):
    """The loader was stopped before this adapter was read."""


class AdapterLoader:
    """A small pool of threads reading adapters into `residency`'s CPU cache."""

    def __init__(
        self, residency: AdapterResidency, *, threads: int = 2, prefetch_queue: int = 256
    ) -> None:
        if threads < 1 or prefetch_queue < 0:
            raise ValueError("threads must be >= 1 and prefetch_queue >= 0")
        self.residency = residency
        self._n_threads = threads
        self._prefetch_cap = prefetch_queue
        self._cond = threading.Condition()
        self._demand: deque[str] = deque()
        self._prefetch: deque[str] = deque()
        self._inflight: dict[str, Future[LoadedAdapter]] = {}
        self._threads: list[threading.Thread] = []
        self._stop = False
        self.on_done: Callable[[], None] | None = None  # the engine's wake-up
        self.prefetch_queued = self.prefetch_dropped = 0

    def start(self) -> AdapterLoader:
        with self._cond:
            if self._threads:
                return self
            self._stop = False
            self._threads = [
                threading.Thread(target=self._run, name=f"adapter-loader-{i}", daemon=True)
                for i in range(self._n_threads)
            ]
        for t in self._threads:
            t.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
            threads, self._threads = self._threads, []
            waiting = [self._inflight.pop(d) for d in [*self._demand, *self._prefetch]]
            self._demand.clear()
            self._prefetch.clear()
        for t in threads:
            t.join(timeout_s)
        for fut in waiting:
            fut.set_exception(LoaderStoppedError("the adapter loader stopped"))

    def load(self, digest: str) -> Future[LoadedAdapter]:
        """The adapter, read by a loader thread; a request waits on this future."""
        with self._cond:
            fut = self._inflight.get(digest)
            if fut is not None:
                if digest in self._prefetch:  # a request waits for it now: go first
                    self._prefetch.remove(digest)
                    self._demand.append(digest)
                return fut
            fut = self._inflight[digest] = Future()
            self._demand.append(digest)
            self._cond.notify()
        return fut

    def prefetch(self, digest: str) -> bool:
        """Warm `digest` into the CPU cache if it is not there; True when queued."""
        if self.residency.touch(digest):  # cached: keep it from ageing out instead
            PREFETCH.labels("resident").inc()
            return False
        with self._cond:
            if digest in self._inflight:
                PREFETCH.labels("in_flight").inc()
                return False
            if self._stop or len(self._prefetch) >= self._prefetch_cap:
                self.prefetch_dropped += 1
                PREFETCH.labels("dropped").inc()
                return False
            self._inflight[digest] = Future()
            self._prefetch.append(digest)
            self.prefetch_queued += 1
            self._cond.notify()
        PREFETCH.labels("queued").inc()
        return True

    @property
    def queued(self) -> tuple[int, int]:
        """(demand loads, prefetches) waiting for a thread."""
        with self._cond:
            return len(self._demand), len(self._prefetch)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self._demand and not self._prefetch:
                    self._cond.wait()
                if self._stop:
                    return
                prefetch = not self._demand
                digest = (self._prefetch if prefetch else self._demand).popleft()
                fut = self._inflight[digest]
            started = time.monotonic()
            try:
                adapter = self.residency.load_cpu(digest)
            except Exception as exc:  # missing / corrupt blob: that request fails, not us
                with self._cond:
                    self._inflight.pop(digest, None)
                if prefetch:
                    PREFETCH.labels("failed").inc()
                    log.warning("prefetch of adapter %s failed: %s", digest[:12], exc)
                fut.set_exception(exc)
            else:
                LOAD_SECONDS.observe(time.monotonic() - started)
                with self._cond:
                    self._inflight.pop(digest, None)
                if prefetch:
                    PREFETCH.labels("loaded").inc()
                fut.set_result(adapter)
            if self.on_done is not None:
                self.on_done()
