"""Migrations: applied once, recorded, and safe to run concurrently."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import psycopg

from tessera.events.migrate import applied_migrations, available_migrations, migrate


def test_rerun_is_a_no_op_and_concurrent_runs_are_safe(database_url: str) -> None:
    # The fixture already migrated this database.
    versions = [m.version for m in available_migrations()]
    assert versions[:3] == ["0001_events", "0002_projections", "0003_tenants_requests"]
    assert applied_migrations(database_url) == versions
    assert migrate(database_url) == []


def test_concurrent_migrators_apply_each_migration_once(stack: object, database_url: str) -> None:
    head, _, _ = database_url.rpartition("/")
    fresh = database_url + "_fresh"
    with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{fresh.rpartition("/")[2]}"')  # generated name
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(migrate, [fresh] * 4))
        applied = sorted(v for r in results for v in r)
        assert applied == sorted(m.version for m in available_migrations())
        assert applied_migrations(fresh) == [m.version for m in available_migrations()]
    finally:
        with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh.rpartition("/")[2]}" WITH (FORCE)')
