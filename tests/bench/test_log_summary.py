"""services.log_summary over PostgreSQL: counts, presence and the rendered summary."""

from __future__ import annotations

import uuid

from tessera.bench.log_summary import count_events, count_present, summarise
from tessera.events.postgres_store import PostgresEventStore
from tests.events.factories import exchange


def test_counts_and_summary(database_url: str) -> None:
    batch = [exchange("t1", "alice", 0), exchange("t1", "bob", 1), exchange("t2", "x", 2)]
    with PostgresEventStore(database_url) as store:
        store.append(batch)
    assert count_events(database_url, tenant_id="t1") == 2
    ids = [batch[0].event_id, batch[0].event_id, batch[2].event_id, uuid.uuid4()]
    assert count_present(database_url, ids, tenant_id="t1") == 1  # t2's id is not t1's
    summary = summarise(database_url, tenant_id="t1")
    assert (summary.events, summary.users, summary.first_position, summary.last_position) == (
        2, 2, 1, 2,
    )
    assert summary.longest_stream == 1 and summary.rejected_inputs == 0
    assert summary.render().startswith("tenant t1: 2 events from 2 users")
