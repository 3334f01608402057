"""The trainer's `/metrics` (TESSERA_WORKER_METRICS_PORT) serves revisions by outcome."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tessera.infra.stack import free_port
from tessera.workers.metrics import record_outcome, record_stage, start_metrics_server


def _value(page: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


def test_trainer_metrics_count_revisions_by_outcome() -> None:
    port = free_port()
    start_metrics_server(port)
    url = f"http://127.0.0.1:{port}/metrics"
    before = httpx.get(url).text
    record_outcome("promoted")
    record_outcome("rejected")
    record_stage("train", 1.5)
    after = httpx.get(url).text
    for outcome in ("promoted", "rejected"):
        name = "tessera_revisions_total"
        assert _value(after, name, outcome=outcome) - _value(before, name, outcome=outcome) == 1
    stage = "tessera_revision_stage_seconds_count"
    assert _value(after, stage, stage="train") - _value(before, stage, stage="train") == 1
