"""Counting reads of the log: which events are in it, and what a tenant's part holds.

Ingest admission asks which of a batch's marker events are durable; the demo, the
benchmarks and operators ask how many events a tenant has and what kinds. `LogReads` has
a PostgreSQL implementation (one connection of its own, re-opened after an error) and an
in-memory twin over any `EventStore`; tests/events/test_log_reads_contract.py runs both.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import psycopg

from tessera.events.db import translated
from tessera.events.store import EventStore

# An event as the log identifies it: ids are unique per tenant, not across tenants, so an
# id alone could find another tenant's event.
EventKey = tuple[str, uuid.UUID]


@dataclass(frozen=True, slots=True)
class TenantCounts:
    events_by_type: dict[str, int]
    users: int
    first_position: int | None
    last_position: int | None
    longest_stream: int  # highest per-user stream version (0 without events)
    rejected_inputs: int  # for the whole log: rejected input may not name a tenant


class LogReads(Protocol):
    def present(self, keys: Sequence[EventKey]) -> set[EventKey]:
        """Of `keys`, those the log holds."""
        ...

    def positions(self, tenant_id: str, *, after: int) -> list[tuple[int, uuid.UUID]]:
        """(position, event id) of the tenant's events after `after`, in position order:
        a cheap tail of the log (no event data)."""
        ...

    def count_events(self, tenant_id: str, *, event_types: Sequence[str] | None = None) -> int:
        """The tenant's events (of `event_types` when given)."""
        ...

    def data_values(self, field: str, *, prefix: str, tenant_id: str | None = None) -> list[str]:
        """The text of `data[field]` of every event (of `tenant_id` when given) where it
        starts with `prefix`, in position order: how harnesses find their marker events."""
        ...

    def tenant_counts(self, tenant_id: str) -> TenantCounts: ...

    def close(self) -> None: ...


class PostgresLogReads:
    """LogReads on one PostgreSQL connection of its own, opened on first use and again
    after an error (callers such as the admission poller log and retry). Not shared
    between threads."""

    def __init__(self, url: str, *, connect_timeout_s: int = 5) -> None:
        self._url = url
        self._timeout = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None

    def present(self, keys: Sequence[EventKey]) -> set[EventKey]:
        if not keys:
            return set()
        rows = self._fetch(
            "find logged events",
            # Every (tenant, id) pair of the keys' tenants and ids, which the UNIQUE
            # (tenant_id, event_id) index answers; kept only if asked for.
            "SELECT tenant_id, event_id FROM events "
            "WHERE tenant_id = ANY(%s::text[]) AND event_id = ANY(%s::uuid[])",
            (
                sorted({tenant for tenant, _ in keys}),
                "{" + ",".join(str(eid) for _, eid in keys) + "}",
            ),
        )
        return {(row[0], row[1]) for row in rows} & set(keys)

    def positions(self, tenant_id: str, *, after: int) -> list[tuple[int, uuid.UUID]]:
        rows = self._fetch(
            "tail the log",
            "SELECT position, event_id FROM events WHERE position > %s AND tenant_id = %s"
            " ORDER BY position",
            (after, tenant_id),
        )
        return [(int(p), e) for p, e in rows]

    def count_events(self, tenant_id: str, *, event_types: Sequence[str] | None = None) -> int:
        params: list[Any] = [tenant_id]
        if event_types is None:
            query = "SELECT count(*) FROM events WHERE tenant_id = %s"
        else:
            query = "SELECT count(*) FROM events WHERE tenant_id = %s AND event_type = ANY(%s)"
            params.append([str(t) for t in event_types])
        rows = self._fetch("count events", query, params)
        return int(rows[0][0]) if rows else 0

    def data_values(self, field: str, *, prefix: str, tenant_id: str | None = None) -> list[str]:
        # LIKE's own wildcards in the prefix match themselves only.
        pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._fetch(
            "find marker events",
            "SELECT data->>%s FROM events WHERE data->>%s LIKE %s"
            " AND (%s::text IS NULL OR tenant_id = %s::text) ORDER BY position",
            (field, field, pattern, tenant_id, tenant_id),
        )
        return [str(r[0]) for r in rows]

    def tenant_counts(self, tenant_id: str) -> TenantCounts:
        by_type = self._fetch(
            "summarise the event log",
            "SELECT event_type, count(*) FROM events WHERE tenant_id = %s GROUP BY event_type",
            (tenant_id,),
        )
        ((users, first, last, longest),) = self._fetch(
            "summarise the event log",
            "SELECT count(DISTINCT user_id), min(position), max(position),"
            " coalesce(max(stream_version), 0) FROM events WHERE tenant_id = %s",
            (tenant_id,),
        )
        ((rejected,),) = self._fetch(
            "count rejected input", "SELECT count(*) FROM rejected_inputs", ()
        )
        return TenantCounts(
            events_by_type={str(k): int(v) for k, v in by_type},
            users=int(users),
            first_position=first,
            last_position=last,
            longest_stream=int(longest),
            rejected_inputs=int(rejected),
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> PostgresLogReads:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, what: str, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with translated(what):
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=self._timeout
                )
            try:
                rows: list[tuple[Any, ...]] = self._conn.execute(query, params).fetchall()
            except psycopg.Error:
                self.close()  # the next call starts on a fresh connection
                raise
        return rows


class MemoryLogReads:
    """The twin over any EventStore's public reads."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def present(self, keys: Sequence[EventKey]) -> set[EventKey]:
        wanted = set(keys)
        found: set[EventKey] = set()
        for tenant in {t for t, _ in wanted}:
            for e in self._store.read(tenant_id=tenant):
                key = (tenant, e.envelope.event_id)
                if key in wanted:
                    found.add(key)
        return found

    def positions(self, tenant_id: str, *, after: int) -> list[tuple[int, uuid.UUID]]:
        return [(e.position, e.envelope.event_id)
                for e in self._store.read(after=after, tenant_id=tenant_id)]

    def count_events(self, tenant_id: str, *, event_types: Sequence[str] | None = None) -> int:
        return len(self._store.read(tenant_id=tenant_id, event_types=event_types))

    def data_values(self, field: str, *, prefix: str, tenant_id: str | None = None) -> list[str]:
        values = (e.envelope.data.get(field) for e in self._store.read(tenant_id=tenant_id))
        return [v for v in values if isinstance(v, str) and v.startswith(prefix)]

    def tenant_counts(self, tenant_id: str) -> TenantCounts:
        events = self._store.read(tenant_id=tenant_id)
        return TenantCounts(
            events_by_type=dict(Counter(str(e.envelope.event_type) for e in events)),
            users=len({e.envelope.user_id for e in events}),
            first_position=events[0].position if events else None,
            last_position=events[-1].position if events else None,
            longest_stream=max((e.stream_version for e in events), default=0),
            rejected_inputs=len(self._store.read_rejected()),
        )

    def close(self) -> None:
        """Nothing held."""


if TYPE_CHECKING:  # mypy proves both classes satisfy the protocol
    from tessera.events.memory_store import MemoryEventStore

    _pg: LogReads = PostgresLogReads("")
    _mem: LogReads = MemoryLogReads(MemoryEventStore())
