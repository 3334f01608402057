"""Prometheus metrics of the ingest stream worker, served on `ingest_metrics_port`.

- `tessera_ingest_records_total{outcome}` — stored, duplicate, rejected (to the DLQ),
  replayed (at or below a stored offset, skipped): read from the sink's own counters at
  scrape time, so the worker keeps one set of numbers;
- `tessera_ingest_batches_total`, `tessera_ingest_gaps_total`;
- `tessera_ingest_consumer_lag{partition}` — records on the broker not yet in the log
  (broker end offset minus the log's tracking offset; Tansu's end offsets can be off after
  multi-record batches, so read it as an estimate).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import REGISTRY, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from tessera.events.stream_sink import SinkStats

CONSUMER_LAG = Gauge(
    "tessera_ingest_consumer_lag",
    "Records on the broker not yet stored in the log, per partition (estimate).",
    ["partition"],
)


class SinkCollector(Collector):
    """The sink's counters as Prometheus counters, read when scraped."""

    def __init__(self, stats: SinkStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        s = self._stats
        records = CounterMetricFamily(
            "tessera_ingest_records", "Interaction records handled, by outcome.", labels=["outcome"]
        )
        for outcome, value in (
            ("stored", s.appended),
            ("duplicate", s.duplicates),
            ("rejected", s.rejected),
            ("replayed", s.replayed),
        ):
            records.add_metric([outcome], value)
        yield records
        yield CounterMetricFamily(
            "tessera_ingest_batches", "Batches appended in one transaction.", value=s.batches
        )
        yield CounterMetricFamily(
            "tessera_ingest_gaps", "Times a partition skipped past the stored offset.", value=s.gaps
        )


def record_lag(end: Mapping[int, int], stored: Mapping[int, int]) -> None:
    """`end`: the broker's next offset per partition; `stored`: the last stored offset."""
    for partition, next_offset in end.items():
        done = stored.get(partition, -1) + 1
        CONSUMER_LAG.labels(str(partition)).set(max(0, next_offset - done))


def serve_metrics(stats: SinkStats, port: int, host: str = "127.0.0.1") -> None:
    """Register the sink's collector and serve `/metrics` from a daemon thread."""
    REGISTRY.register(SinkCollector(stats))
    start_http_server(port, addr=host)
