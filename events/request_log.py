"""The request log's writer: which revision answered which request, in batches.

Serving writes these rows off its hot path, best-effort: a failed batch is dropped by the
caller, never retried here (services/inference/request_log.py). `RequestSink` is what
the writer needs; `PostgresRequestSink` keeps one connection of its own (re-opened after
an error), and either event store is a sink too (`EventStore.record_requests`), the
in-memory one being the twin. tests/events/test_request_log_contract.py runs both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

import psycopg

from tessera.events.db import translated
from tessera.events.store import RequestRecord

_INSERT: Final = (
    "INSERT INTO request_log (request_id, tenant_id, user_id, revision_id, adapter_digest,"
    " source, at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING"
)


class RequestSink(Protocol):
    def record_requests(self, records: Sequence[RequestRecord]) -> None:
        """Store request -> revision rows; a request id already stored is kept as is.
        Raises EventStoreError (nothing of the batch may be stored)."""
        ...


class PostgresRequestSink:
    """RequestSink on one autocommit connection, opened on first use and again after an
    error. One writer thread at a time."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._conn: psycopg.Connection[Any] | None = None

    def record_requests(self, records: Sequence[RequestRecord]) -> None:
        if not records:
            return
        with translated("record requests"):
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._url, autocommit=True)
            try:
                with self._conn.cursor() as cur:
                    cur.executemany(
                        _INSERT,
                        [(r.request_id, r.tenant_id, r.user_id, r.revision_id, r.adapter_digest,
                          r.source, r.at) for r in records],
                    )
            except psycopg.Error:
                self.close()  # the next batch starts on a fresh connection
                raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


if TYPE_CHECKING:  # mypy proves the sink and the in-memory store satisfy the protocol
    from tessera.events.memory_store import MemoryEventStore

    _pg: RequestSink = PostgresRequestSink("")
    _mem: RequestSink = MemoryEventStore()
