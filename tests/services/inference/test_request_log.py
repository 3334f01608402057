"""request -> revision rows in PostgreSQL, sampled; the projection lookup on a real DB."""

from __future__ import annotations

import time

import psycopg
import pytest

from tessera.services.inference.component import projection_lookup
from tessera.services.inference.request_log import PostgresRequestLog
from tessera.services.inference.revisions import BASE, Served

pytestmark = pytest.mark.integration


def _rows(url: str) -> list[tuple[object, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT request_id, tenant_id, user_id, revision_id, adapter_digest, source"
            " FROM request_log ORDER BY request_id"
        ).fetchall()


def test_rows_written_and_sampled(database_url: str) -> None:
    log = PostgresRequestLog(database_url, share=1.0)
    log.record("r1", "t1", "ann", Served("rev-1", "a" * 64, "personal"))
    log.record("r2", "t1", "bob", BASE)
    log.record("r1", "t1", "ann", Served("rev-1", "a" * 64, "personal"))  # duplicate id: no-op
    log.close()
    assert _rows(database_url) == [
        ("r1", "t1", "ann", "rev-1", "a" * 64, "personal"),
        ("r2", "t1", "bob", None, None, "base"),
    ]
    sampled = PostgresRequestLog(database_url, share=0.25, seed=7)
    for i in range(400):
        sampled.record(f"s{i:03d}", "t1", "cyd", BASE)
    sampled.close()
    n = len(_rows(database_url)) - 2
    assert 60 <= n <= 140 and sampled.dropped == 0


def test_unreachable_database_never_raises() -> None:
    log = PostgresRequestLog("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    log.record("r1", "t1", "ann", BASE)  # must not raise in the request path
    deadline = time.monotonic() + 10
    while log.dropped == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    assert log.dropped == 1


def test_projection_lookup_falls_back_to_base(database_url: str) -> None:
    lookup = projection_lookup(database_url)
    assert lookup("t1", "nobody") == BASE
