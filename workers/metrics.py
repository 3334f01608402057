"""Visibility for the training workers: Prometheus metrics and structured (JSON) logs.

Metrics (served by `start_metrics_server`):
- `tessera_training_queue_depth` — training requests not yet processed by this group
  (end offset minus committed offset, summed over partitions; Tansu's end offsets can be
  off after multi-record batches, so read it as an estimate);
- `tessera_revisions_total{outcome}` and the gauge `tessera_revisions_per_hour` (sliding
  one-hour window in this process);
- `tessera_gate_decisions_total{decision}` and `tessera_gate_pass_rate` (promoted /
  evaluated over the same window);
- `tessera_revision_stage_seconds{stage}` — dataset, train, evaluate, store.

Logs: `configure_logging(json_logs=True)` (workers/json_logs.py, re-exported here) makes
every record one JSON object; pass ids with `extra={"user_id": ..., "revision_id": ...}`
and they become fields.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Final

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from tessera.workers.json_logs import configure_logging

__all__ = ["configure_logging", "record_outcome", "record_stage", "start_metrics_server"]

WINDOW_S: Final = 3600.0

QUEUE_DEPTH = Gauge("tessera_training_queue_depth", "Training requests waiting for this group.")
REVISIONS = Counter("tessera_revisions", "Revision requests handled, by outcome.", ["outcome"])
REVISIONS_PER_HOUR = Gauge("tessera_revisions_per_hour", "Revisions trained in the last hour.")
GATE_DECISIONS = Counter("tessera_gate_decisions", "Gate decisions.", ["decision"])
GATE_PASS_RATE = Gauge("tessera_gate_pass_rate", "Promoted / evaluated over the last hour.")
STAGE_SECONDS = Histogram(
    "tessera_revision_stage_seconds",
    "Seconds per revision stage.",
    ["stage"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)


class _Window:
    """Timestamps of recent revisions and decisions; feeds the two windowed gauges."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._trained: deque[float] = deque()
        self._decisions: deque[tuple[float, bool]] = deque()

    def record(self, *, promoted: bool, now: float | None = None) -> None:
        t = time.time() if now is None else now
        with self._lock:
            self._trained.append(t)
            self._decisions.append((t, promoted))
            self._expire(t)
            REVISIONS_PER_HOUR.set(len(self._trained))
            passed = sum(1 for _, ok in self._decisions if ok)
            GATE_PASS_RATE.set(passed / len(self._decisions) if self._decisions else 0.0)

    def _expire(self, now: float) -> None:
        while self._trained and self._trained[0] < now - WINDOW_S:
            self._trained.popleft()
        while self._decisions and self._decisions[0][0] < now - WINDOW_S:
            self._decisions.popleft()


_window = _Window()


def record_outcome(outcome: str) -> None:
    """Count one handled request: "promoted", "rejected", "skipped" or "failed"."""
    REVISIONS.labels(outcome=outcome).inc()
    if outcome in ("promoted", "rejected"):
        GATE_DECISIONS.labels(decision=outcome).inc()
        _window.record(promoted=outcome == "promoted")


def record_stage(stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(stage=stage).observe(seconds)


def start_metrics_server(port: int, host: str = "127.0.0.1") -> None:
    """Serve `/metrics` on `host:port` from a daemon thread."""
    start_http_server(port, addr=host)
