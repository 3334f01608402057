"""Fixtures for the event store tests: `store` runs each contract test on both stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tessera.events.memory_store import MemoryEventStore
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.store import EventStore


@pytest.fixture(params=["memory", "postgres"])
def store(request: pytest.FixtureRequest) -> Iterator[EventStore]:
    """Each implementation in turn; PostgreSQL on a fresh migrated database."""
    if request.param == "memory":
        yield MemoryEventStore()
        return
    url: str = request.getfixturevalue("database_url")
    pg = PostgresEventStore(url)
    try:
        yield pg
    finally:
        pg.close()
