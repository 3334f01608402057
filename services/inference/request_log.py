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

import psycopg

from tessera.services.inference.revisions import Served

log = logging.getLogger(__name__)

_INSERT = (
    "INSERT INTO request_log (request_id, tenant_id, user_id, revision_id, adapter_digest,"
    " source, at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (request_id) DO NOTHING"
)

Row = tuple[str, str, str, str | None, str | None, str, datetime]


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
    ) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError("share must be within [0, 1]")
        self._url = database_url
        self._share = share
        self._rng = random.Random(seed)
        self._queue: queue.Queue[Row | None] = queue.Queue(max_pending)
        self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
        self._thread.start()
        self.dropped = 0

    def record(self, request_id: str, tenant_id: str, user_id: str, served: Served) -> None:
        if self._share < 1.0 and self._rng.random() >= self._share:
            return
        row: Row = (
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
        conn: psycopg.Connection[tuple[object, ...]] | None = None
        stopping = False
        while not stopping:
            first = self._queue.get()
            rows: list[Row] = []
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
                if conn is None or conn.closed:
                    conn = psycopg.connect(self._url, autocommit=True)
                with conn.cursor() as cur:
                    cur.executemany(_INSERT, rows)
            except psycopg.Error as exc:
                log.warning("request_log: dropped %d rows: %s", len(rows), exc)
                self.dropped += len(rows)
                conn = None
        if conn is not None:
            conn.close()
