"""Versioned SQL migrations: `events/migrations/NNNN_name.sql`, applied once each, in order.

`schema_migrations` records what is applied; re-running is a no-op. A session-level
advisory lock makes concurrent migrators (several workers starting at once) safe: the
second waits, then finds nothing left to do.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Final

from psycopg import sql

from tessera.events.db import connect, translated

# Arbitrary constant shared by every Tessera migrator ("tessera" in ASCII, as an int).
MIGRATION_LOCK_KEY: Final = 0x7465737365726100
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # e.g. "0001_events"
    sql: str


def available_migrations() -> list[Migration]:
    """Every migration file shipped with the package, in version order."""
    folder = resources.files("tessera.events.migrations")
    found = [
        Migration(version=entry.name.removesuffix(".sql"), sql=entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if _NAME.match(entry.name)
    ]
    return sorted(found, key=lambda m: m.version)


def applied_migrations(url: str) -> list[str]:
    """Versions recorded in `schema_migrations` (empty for a fresh database)."""
    with connect(url, autocommit=True) as conn, translated("read schema_migrations"):
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        if not exists or not exists[0]:
            return []
        return [
            row[0] for row in conn.execute("SELECT version FROM schema_migrations ORDER BY version")
        ]


def migrate(url: str) -> list[str]:
    """Apply every migration not yet applied; return the versions applied by this call."""
    applied_now: list[str] = []
    with connect(url, autocommit=True) as conn, translated("migrate"):
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for migration in available_migrations():
                if migration.version in done:
                    continue
                # Each migration and its record commit together: a failure leaves no half.
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version) VALUES (%s)", (migration.version,)
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    return applied_now


@contextmanager
def scratch_database(url: str, *, prefix: str) -> Iterator[str]:
    """A fresh, migrated database named `<prefix>_<random>` on the server of `url` (whose
    `postgres` database must accept CREATE DATABASE); dropped on exit, even with
    connections still open."""
    head, _, _ = url.rpartition("/")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connect(f"{head}/postgres", autocommit=True) as conn, translated("create database"):
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        scratch = f"{head}/{name}"
        migrate(scratch)
        yield scratch
    finally:
        with connect(f"{head}/postgres", autocommit=True) as conn, translated("drop database"):
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
