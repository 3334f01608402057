"""The catalog benchmark at small scale against the test database: the synthetic fill is
what the projections say it is, and the bench's answers are checked, not only timed."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from typer.testing import CliRunner

from tessera.bench.catalog import RESULT_KEYS, CatalogBenchConfig, run_catalog_bench
from tessera.bench.cli import app
from tessera.events import bulk_fill, catalog
from tessera.events.rebuild import rebuild_projections
from tessera.infra.stack import StackInfo
from tessera.schemas.settings import get_settings
from tessera.workers.scheduler_state import SchedulerState

USERS = 2_000


_INDEXES = ("SELECT tablename, indexdef FROM pg_indexes "
            "WHERE tablename IN ('events', 'users', 'revisions', 'heads') ORDER BY 1, 2")


def test_fill_is_what_a_rebuild_of_its_log_gives(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        indexes_before = conn.execute(_INDEXES).fetchall()
        report = bulk_fill.fill_catalog(conn, users=300, tenants=3)
        filled = catalog.read_state(conn)
        events = conn.execute("SELECT count(*) FROM events").fetchone()
    assert events is not None and events[0] == report.events
    assert report.revisions == sum(bulk_fill.revisions_of(i) for i in range(300))
    # Streamed in batches of 7 users: the same rows as one batch would give.
    rebuilt = rebuild_projections(database_url, streams_per_flush=7)
    assert (rebuilt.users, rebuilt.revisions, rebuilt.heads) == (300, report.revisions, 300)
    assert (rebuilt.flushes, rebuilt.max_streams_held) == (-(-300 // 7), 7)
    with psycopg.connect(database_url) as conn:
        assert catalog.read_state(conn).rows() == filled.rows()
        # Every index and key dropped for the fill is back, as the migrations made it.
        assert conn.execute(_INDEXES).fetchall() == indexes_before
    assert len(indexes_before) >= 8
    head = filled.heads[(bulk_fill.tenant_of(7, 3), bulk_fill.user_of(7))]
    assert head.revision_id == bulk_fill.head_of(7) == "rev-7-1"


def test_fill_refuses_a_log_that_is_not_empty(database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        bulk_fill.fill_catalog(conn, users=5, tenants=1)
        with pytest.raises(ValueError, match="already holds events"):
            bulk_fill.fill_catalog(conn, users=5, tenants=1)


def test_bench_small_scale_counts_and_right_answers(database_url: str) -> None:
    config = CatalogBenchConfig(users=USERS, tenants=2, clients=4, lookups=500, lineages=100,
                                promotions=20, forgets=10)
    result = run_catalog_bench(database_url, config)
    assert set(RESULT_KEYS) <= set(result)
    expected_revisions = sum(bulk_fill.revisions_of(i) for i in range(USERS))
    expected_events = sum(bulk_fill.steps_of(i) for i in range(USERS))
    assert (result["users"], result["revisions"], result["events"]) == (
        USERS, expected_revisions, expected_events)
    # Every answer matched the fill: served heads, lineage trees, promoted heads, forgets.
    for check in ("head", "lineage", "promote", "forget"):
        assert result[f"{check}_mismatches"] == 0, check
    assert result["head_lookups"] == 500
    assert result["planning_due"] == result["planning_expected"] == USERS // bulk_fill.DUE_EVERY
    assert result["rebuild_heads"] == USERS - 10  # forgotten users are served no head
    assert result["bytes_per_user"] > 0 and result["rebuild_events_per_s"] > 0
    assert 0 < result["head_lookup_p50_ms"] <= result["head_lookup_p99_ms"]
    # After the promotions the planning scan still finds only the due users left: the
    # promoted candidates were trained up to each user's last event.
    due = SchedulerState(database_url).users_due(20)
    assert {d.user_id for d in due} <= {bulk_fill.user_of(i) for i in range(0, USERS, 20)}


def test_cli_prints_the_json_last(
    database_url: str, stack: StackInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "catalog.json"
    # The command fills a database of its own on the same server, and drops it after.
    monkeypatch.setenv("TESSERA_DATABASE_URL", database_url)
    monkeypatch.setenv("TESSERA_KAFKA_BOOTSTRAP", stack.kafka_bootstrap)
    get_settings.cache_clear()
    try:
        run = CliRunner().invoke(app, [
            "bench", "catalog", "--users", "60", "--lookups", "20", "--lineages", "10",
            "--promotions", "3", "--forgets", "2", "--no-rebuild", "--out", str(out),
        ])
    finally:
        get_settings.cache_clear()
    assert run.exit_code == 0, run.output
    last = json.loads(run.output.strip().splitlines()[-1])
    assert last["users"] == 60 and last["head_mismatches"] == 0
    assert last["rebuild_events_per_s"] is None
    assert json.loads(out.read_text())["events"] == last["events"]
    with psycopg.connect(database_url) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                            ("tessera_bench_catalog",)).fetchone()
    assert left is None
