"""HTTP -> Kafka -> `tessera worker ingest` -> PostgreSQL, all real: accepted events land
exactly once, in each user's order, for the tenant of the key; auth goes through the
tenants table."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient

from tessera.bench.subprocesses import TesseraProcess
from tessera.infra.stack import StackInfo, free_port
from tessera.schemas.settings import Settings
from tessera.services.auth import authenticator_from_database
from tessera.services.ingest.service import IngestService
from tessera.services.tenant_admin import ensure_tenant_with_key

from .conftest import ingest_app

pytestmark = [pytest.mark.integration, pytest.mark.slow]
METRICS_PORT = free_port()


@pytest.fixture()
def worker(
    stack: StackInfo, database_url: str, settings: Settings, tmp_path: Path
) -> Iterator[TesseraProcess]:
    env = {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_TOPIC_INTERACTIONS": settings.topic_interactions,
        "TESSERA_TOPIC_INTERACTIONS_DLQ": settings.topic_interactions_dlq,
        "TESSERA_STREAM_GROUP": f"test-{uuid.uuid4().hex[:8]}",
        "TESSERA_INGEST_METRICS_PORT": str(METRICS_PORT),
        "TESSERA_JSON_LOGS": "1",
    }
    with TesseraProcess(
        "ingest worker", ["worker", "ingest"], log_path=tmp_path / "worker.log", env=env
    ) as proc:
        yield proc


def _rows(database_url: str) -> list[tuple[uuid.UUID, str, str, int, dict[str, object]]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(
            "SELECT event_id, tenant_id, user_id, stream_version, data FROM events"
            " ORDER BY position"
        ).fetchall()


def test_http_batches_land_in_postgres_exactly_once_in_user_order(
    database_url: str, ingest_service: IngestService, worker: TesseraProcess
) -> None:
    key = ensure_tenant_with_key(database_url, "acme")
    auth = authenticator_from_database(database_url, admin_key="admin-key-for-test")
    now = datetime.now(UTC)
    users = [f"user{u}" for u in range(5)]
    # 3 sequential batches, 20 events each (the test settings' batch limit), 4 per user.
    sent: list[list[dict[str, object]]] = [
        [
            {
                "type": "text",
                "user_id": users[i % 5],
                "occurred_at": (now - timedelta(seconds=60 - b * 20 - i)).isoformat(),
                "text": f"batch {b} message {i}",
            }
            for i in range(20)
        ]
        for b in range(3)
    ]
    accepted: list[uuid.UUID] = []
    with TestClient(ingest_app(ingest=ingest_service, auth=auth)) as client:
        headers = {"X-API-Key": key}
        bad = client.post("/v1/events", json={"events": [{"type": "text"}]}, headers=headers)
        assert bad.status_code == 422
        assert client.post("/v1/events", json={"events": sent[0]}, headers={}).status_code == 401
        for batch in sent:
            resp = client.post("/v1/events", json={"events": batch}, headers=headers)
            assert resp.status_code == 202, resp.text
            accepted += [uuid.UUID(x) for x in resp.json()["accepted"]]
        # A retried batch (same ids, as a client retrying after a timeout would send).
        retry = [
            dict(item, event_id=str(i)) for item, i in zip(sent[0], accepted[:20], strict=True)
        ]
        assert client.post("/v1/events", json={"events": retry}, headers=headers).status_code == 202

    deadline = time.monotonic() + 120
    rows = _rows(database_url)
    while len(rows) < len(accepted) and time.monotonic() < deadline:
        worker.ensure_running()
        time.sleep(0.5)
        rows = _rows(database_url)
    time.sleep(2)  # anything extra (a duplicate) would arrive by now
    rows = _rows(database_url)

    assert sorted(r[0] for r in rows) == sorted(accepted)  # all of them, once each
    # the worker's /metrics counts what it stored (the retried batch is not stored again)
    page = httpx.get(f"http://127.0.0.1:{METRICS_PORT}/metrics", timeout=10).text
    assert f'tessera_ingest_records_total{{outcome="stored"}} {len(accepted)}.0' in page
    assert "tessera_ingest_consumer_lag" in page
    # TESSERA_JSON_LOGS: faust's own lines too, after it set up logging at start
    lines = worker.log_path.read_text().splitlines()[1:]  # [0]: the command's echo
    assert any("Worker" in line for line in lines)
    for line in lines:
        assert isinstance(json.loads(line), dict), line
    assert {r[1] for r in rows} == {"acme"}
    texts = [str(item["text"]) for batch in sent for item in batch]
    for user in users:
        mine = [r for r in rows if r[2] == user]
        assert [r[3] for r in mine] == list(range(1, 13))  # stream versions 1..12
        expected = [
            t
            for t, item in zip(texts, (i for b in sent for i in b), strict=True)
            if item["user_id"] == user
        ]
        assert [r[4]["text"] for r in mine] == expected  # in the order they were sent
