"""Admission control for ingest: bound how far the log may fall behind what was accepted.

Without it, a client that sends faster than the stream worker commits only grows the
backlog on the broker: every accepted event then waits longer to be durable in the log
(and to be trained on or audited), without limit. That is the right behaviour when the
broker is the buffer of record (a replicated Kafka absorbing a consumer outage), so it
stays the default (`ingest_max_lag_s = 0`). Where bounded staleness matters more, or
the broker keeps records only in memory (the embedded Tansu), set `ingest_max_lag_s`: the
API then admits a batch only while the events it accepted and has not yet seen in the
log fit into that many seconds of the log's recent commit rate; a batch that does not
fit is held (backpressure, up to `max_wait_s`) and then answered `429`
(gRPC `RESOURCE_EXHAUSTED`) with a retry hint. Retrying is safe: event ids make it
idempotent.

Durability is read from the log itself, by (tenant, event id), not from Kafka offsets (Tansu
reports wrong end offsets, and a restarted in-memory broker starts offsets at 0 again).
Records of one partition are appended in offset order, so a batch is durable once the
last event it sent to each partition is in the log: a handful of ids per batch. A batch
that never shows up (a broker restart lost it) stops holding ingest back after
`forget_after_s`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from tessera.events.log_reads import EventKey, PostgresLogReads

log = logging.getLogger(__name__)

PENDING_EVENTS = Gauge(
    "tessera_ingest_pending_events", "Events accepted by this server and not yet in the log."
)
SHED_BATCHES = Counter("tessera_ingest_shed_batches", "Ingest batches answered 429.")
FORGOTTEN_EVENTS = Counter(
    "tessera_ingest_unconfirmed_events",
    "Accepted events not seen in the log within forget_after_s (no longer waited for).",
)

# The commit rate is measured over this window: long enough to smooth the worker's
# batching, short enough to follow a change (a second worker joining, a slow disk).
RATE_WINDOW_S = 3.0
# At most this many of the oldest pending batches are checked per poll (one query).
CHECK_BATCHES = 32


# `EventKey` (tenant, event id), from events/log_reads.py: ids are unique per tenant, not
# across tenants, so an id alone could find another tenant's event and call a batch
# durable that is not.
__all__ = ["Admission", "AdmissionConfig", "EventKey", "LogBehind", "postgres_durable_ids"]


class LogBehind(RuntimeError):
    """The log is too far behind what was accepted; retry after `retry_after_s`."""

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    max_lag_s: float
    """Seconds of the recent commit rate that accepted-but-not-durable events may fill."""
    max_wait_s: float = 5.0
    """How long a request waits for room (backpressure) before it is answered 429."""
    forget_after_s: float = 30.0
    poll_s: float = 0.05


@dataclass(slots=True)
class _Batch:
    accepted_at: float
    events: int
    markers: set[EventKey]
    """The last event of each partition in the batch, not yet seen in the log."""


class Admission:
    """Thread-safe bookkeeping of this server's accepted, not yet durable batches."""

    def __init__(
        self,
        config: AdmissionConfig,
        find_durable: Callable[[Sequence[EventKey]], set[EventKey]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self._find_durable = find_durable
        self._clock = clock
        self._lock = threading.Lock()
        self._pending: deque[_Batch] = deque()
        self._pending_events = 0
        self._in_flight = 0
        self._confirmed: deque[tuple[float, int]] = deque()  # (when, events) in the window
        # How many accepted, not yet durable events are allowed: adjusted on every poll
        # from the age of the oldest pending batch (see `_adjust_window_locked`).
        self._window = 0.0
        self._peak_used = 0  # most events waiting at once since the last poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the request path -------------------------------------------------------------

    def try_reserve(self, events: int) -> bool:
        """Claim room for a batch of `events` about to be published; False when the log
        is too far behind for it now. Pair a success with `accepted` (published) or
        `release` (not published)."""
        with self._lock:
            waiting = self._pending_events + self._in_flight
            if waiting and waiting + events > self._limit_locked(events):
                return False
            self._in_flight += events
            self._peak_used = max(self._peak_used, waiting + events)
            return True

    def refusal(self, events: int) -> LogBehind:
        """The error for a batch that found no room within `max_wait_s`."""
        SHED_BATCHES.inc()
        with self._lock:
            waiting = self._pending_events + self._in_flight
            rate = self._rate_locked()
            over = waiting + events - self._limit_locked(events)
        behind = f"~{waiting / rate:.1f} s" if rate else "nothing logged lately"
        retry = max(self.config.poll_s, over / rate) if rate else 1.0
        return LogBehind(
            f"the event log is {waiting} accepted events ({behind}) behind; "
            f"retry in {retry:.2f} s",
            retry_after_s=retry,
        )

    def release(self, events: int) -> None:
        with self._lock:
            self._in_flight -= events

    def accepted(self, events: int, markers: Sequence[EventKey]) -> None:
        """The batch was acknowledged by the broker; wait for `markers` in the log."""
        with self._lock:
            self._in_flight -= events
            if markers:
                self._pending.append(_Batch(self._clock(), events, set(markers)))
                self._pending_events += events
            PENDING_EVENTS.set(self._pending_events)

    @property
    def pending_events(self) -> int:
        with self._lock:
            return self._pending_events

    # --- the poller -------------------------------------------------------------------

    def poll_once(self) -> None:
        """Look up the oldest pending batches' markers in the log; retire durable ones."""
        with self._lock:
            self._expire_locked()
            batches = list(self._pending)[:CHECK_BATCHES]
        wanted = [m for b in batches for m in b.markers]
        if not wanted:
            return
        found = self._find_durable(wanted)
        with self._lock:
            now = self._clock()
            for batch in batches:
                batch.markers -= found
            done = [b for b in self._pending if not b.markers]
            if done:
                self._pending = deque(b for b in self._pending if b.markers)
                n = sum(b.events for b in done)
                self._pending_events -= n
                self._confirmed.append((now, n))
            self._adjust_window_locked(now)
            PENDING_EVENTS.set(self._pending_events)

    def start(self) -> Admission:
        self._thread = threading.Thread(target=self._run, name="ingest-admission", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.wait(self.config.poll_s):
            try:
                self.poll_once()
            except Exception:  # the poller must outlive a database outage
                log.exception("ingest admission: could not read the log; retrying")
                self._stop.wait(1.0)

    # --- internals (call with the lock held) ------------------------------------------

    def _expire_locked(self) -> None:
        cutoff = self._clock() - self.config.forget_after_s
        while self._pending and self._pending[0].accepted_at < cutoff:
            batch = self._pending.popleft()
            self._pending_events -= batch.events
            FORGOTTEN_EVENTS.inc(batch.events)
            log.warning(
                "%d accepted events are not in the log after %.0f s; no longer waiting for "
                "them (lost by a broker restart, or the stream worker is down)",
                batch.events,
                self.config.forget_after_s,
            )

    def _rate_locked(self) -> float:
        """Events per second confirmed durable over the recent window (0: unknown)."""
        now = self._clock()
        while self._confirmed and self._confirmed[0][0] < now - RATE_WINDOW_S:
            self._confirmed.popleft()
        if not self._confirmed:
            return 0.0
        return sum(n for _, n in self._confirmed) / RATE_WINDOW_S

    def _adjust_window_locked(self, now: float) -> None:
        """Grow the window while batches become durable well within `max_lag_s`, shrink
        it when the oldest pending batch is older than that (additive increase would be
        too slow to find a worker's rate; multiplicative both ways, bounded below).

        Why not simply `rate * max_lag_s`: by Little's law the rate then follows the
        window, and a pipeline whose fixed delay (batching, polling) is near `max_lag_s`
        would settle at a fraction of what the worker can do."""
        oldest_age = now - self._pending[0].accepted_at if self._pending else 0.0
        used, self._peak_used = self._peak_used, self._pending_events + self._in_flight
        if oldest_age > self.config.max_lag_s:
            self._window *= 0.7
        elif oldest_age < self.config.max_lag_s / 2 and used >= self._window / 2:
            # Only a window in use grows (an idle server must not build up a huge one),
            # and never past twice what the log took in `max_lag_s` lately.
            ceiling = max(2 * self._rate_locked() * self.config.max_lag_s, float(used))
            self._window = min(max(self._window * 1.25, float(used)), ceiling)

    def _limit_locked(self, events: int) -> float:
        # Room for at least two batches of this size: one being logged while the next is
        # published, or the worker idles between batches.
        return max(2 * events, self._window)


def postgres_durable_ids(database_url: str) -> Callable[[Sequence[EventKey]], set[EventKey]]:
    """A `find_durable` over the event log, on one connection of its own (re-opened after
    an error; the poller logs and retries)."""
    return PostgresLogReads(database_url).present
