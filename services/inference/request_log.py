"""Which revision answered which request: rows in `request_log`, written off the hot path.

`record` only enqueues (sampled by `share`); a writer thread inserts in batches, so the
engine never waits for PostgreSQL. Writes that fail are logged and dropped: the audit
trail is best-effort by design and must never fail a user's request.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
from datetime import UTC, datetime
from typing import Protocol

from tessera.events.request_log import PostgresRequestSink, RequestSink
from tessera.events.store import EventStoreError, RequestRecord
from tessera.services.inference.revisions import Served

log = logging.getLogger(__name__)


class RequestLog(Protocol):
    def record(self, request_id: str, tenant_id: str, user_id: str, served: Served) -> None: ...


class PostgresRequestLog:
    """Sampled, batched inserts into `request_log` from a background thread."""

    def __init__(
        self,
        database_url: str,
        *,
        share: float = 1.0,
        max_pending: int = 10_000,
        seed: int | None = None,
        sink: RequestSink | None = None,
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError("share must be within [0, 1]")
        # `sink` replaces the database (the in-memory store in tests).
        self._sink = sink if sink is not None else PostgresRequestSink(database_url)
        self._share = share
        self._rng = random.Random(seed)
        self._queue: queue.Queue[RequestRecord | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()
        self.dropped = 0

    def record(self, request_id: str, tenant_id: str, user_id: str, served: Served) -> None:
        if self._share < 1.0 and self._rng.random() >= self._share:
            return
        row = RequestRecord(
            request_id,
            tenant_id,
            user_id,
            served.revision_id,
            served.adapter_digest,
            served.source,
            datetime.now(UTC),
        )
        try:
            self._queue.put_nowait(row)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, then stop the writer."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            rows: list[RequestRecord] = []
            if first is None:
                stopping = True
            else:
                rows.append(first)
            while len(rows) < 500:  # drain what is already there into one batch
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                rows.append(nxt)
            if not rows:
                continue
            try:
                self._sink.record_requests(rows)
            except EventStoreError as exc:
                log.warning("request_log: dropped %d rows: %s", len(rows), exc)
                self.dropped += len(rows)
        if isinstance(self._sink, PostgresRequestSink):
            self._sink.close()
