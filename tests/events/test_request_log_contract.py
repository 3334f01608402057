"""RequestSink: the request log's writer, on PostgreSQL and on the in-memory store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.events.request_log import PostgresRequestSink, RequestSink
from tessera.events.store import EventStore, EventStoreError, RequestRecord

AT = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture()
def sink(store: EventStore) -> Iterator[RequestSink]:
    if not isinstance(store, PostgresEventStore):
        yield store  # the in-memory store is its own sink
        return
    pg = PostgresRequestSink(store.url)
    yield pg
    pg.close()


def _record(request_id: str, revision: str | None = "r1") -> RequestRecord:
    if revision is None:
        return RequestRecord(request_id, "t1", "alice", None, None, "base", AT)
    return RequestRecord(request_id, "t1", "alice", revision, f"digest-{revision}", "personal", AT)


def test_rows_are_stored_and_the_first_of_an_id_is_kept(
    store: EventStore, sink: RequestSink
) -> None:
    sink.record_requests([])
    sink.record_requests([_record("q1"), _record("q2", None)])
    sink.record_requests([_record("q1", "r9")])  # the same id again: kept as first stored
    assert store.get_request("q1") == _record("q1")
    assert store.get_request("q2") == _record("q2", None)
    assert store.get_request("q3") is None


def test_an_unreachable_database_raises_a_store_error() -> None:
    sink = PostgresRequestSink("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    with pytest.raises(EventStoreError):
        sink.record_requests([_record("q1")])
    sink.close()
