"""The reads behind the audit answers: a stream's lineage, one revision's provenance, and
which adapter blobs live revisions still name.

`AuditReads` has a PostgreSQL implementation (each answer from one read-only snapshot,
so its parts never disagree) and an in-memory twin over any `EventStore`; both are run
through tests/events/test_audit_reads_contract.py. The audit models built from these
rows live in services/audit/queries.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from psycopg import sql

from tessera.events import catalog
from tessera.events.catalog import ServedRevision, served_revision
from tessera.events.db import Connection
from tessera.events.pg_log import SELECT_EVENTS, row_to_event
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.projections import HeadRow, RevisionRow, UserRow
from tessera.events.store import EventStore, StoredEvent
from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID, RevisionState
from tessera.schemas.revisions import REVISION_PAYLOADS

# The log events an audit lists for a stream: revision decisions, rollbacks, forgets.
HISTORY_EVENT_TYPES: Final = sorted(str(t) for t in REVISION_PAYLOADS)
_INTERACTIONS: Final = sorted(str(t) for t in INTERACTION_TYPES)


@dataclass(frozen=True, slots=True)
class UserAuditRows:
    user: UserRow | None
    revisions: list[RevisionRow]  # the stream's, in training order
    head: HeadRow | None
    served: ServedRevision  # personal head, else the tenant prior, else the base model
    history: list[StoredEvent]  # the stream's HISTORY_EVENT_TYPES events, by position


@dataclass(frozen=True, slots=True)
class DatasetRows:
    """The interaction events of a revision's dataset range (a prior's spans its tenant)."""

    count: int  # forgotten ones included
    redacted: int  # of those, how many a forget erased
    event_ids: list[str]  # the first `max_ids`, in position order


@dataclass(frozen=True, slots=True)
class RevisionAuditRows:
    revision: RevisionRow
    stream: list[RevisionRow]  # every revision of its stream, in training order
    parent: RevisionRow | None
    head: HeadRow | None  # its stream's head
    dataset: DatasetRows
    history: list[StoredEvent]  # its stream's HISTORY_EVENT_TYPES events, by position


class AuditReads(Protocol):
    def user_audit(self, tenant_id: str, user_id: str) -> UserAuditRows:
        """Everything recorded about the stream (empty rows for an unknown user)."""
        ...

    def revision_audit(self, revision_id: str, *, max_ids: int) -> RevisionAuditRows | None:
        """The revision with its stream, parent and dataset; None when unknown."""
        ...

    def live_adapter_digests(self, digests: Sequence[str]) -> set[str]:
        """Of `digests`, those some revision that is not forgotten still names (content
        addressing lets two revisions share a blob)."""
        ...


class PostgresAuditReads:
    """AuditReads over a PostgresEventStore's pool."""

    def __init__(self, store: PostgresEventStore) -> None:
        self._store = store

    def user_audit(self, tenant_id: str, user_id: str) -> UserAuditRows:
        with self._store.connection("audit lineage") as conn:
            # The snapshot and every read in one round trip (pipeline mode): one round
            # trip each was most of a lineage's time at 10^6 users (tessera bench catalog).
            with conn.pipeline():
                _snapshot(conn)
                collect = catalog.start_stream_reads(conn, tenant_id, user_id)
                history = conn.execute(_HISTORY, (tenant_id, user_id, HISTORY_EVENT_TYPES))
            rows = collect()
            return UserAuditRows(
                user=rows.user,
                revisions=rows.revisions,
                head=rows.head,
                served=rows.served,
                history=[row_to_event(r) for r in history.fetchall()],
            )

    def revision_audit(self, revision_id: str, *, max_ids: int) -> RevisionAuditRows | None:
        with self._store.connection("audit revision") as conn:
            _snapshot(conn)
            row = catalog.get_revision(conn, revision_id)
            if row is None:
                return None
            parent = row.parent_revision_id
            return RevisionAuditRows(
                revision=row,
                stream=catalog.list_revisions(conn, row.tenant_id, row.user_id),
                parent=catalog.get_revision(conn, parent) if parent else None,
                head=catalog.get_head(conn, row.tenant_id, row.user_id),
                dataset=_dataset(conn, row, max_ids),
                history=_history(conn, row.tenant_id, row.user_id),
            )

    def live_adapter_digests(self, digests: Sequence[str]) -> set[str]:
        if not digests:
            return set()
        with self._store.connection("find shared adapters") as conn:
            rows = conn.execute(
                "SELECT DISTINCT adapter_digest FROM revisions "
                "WHERE adapter_digest = ANY(%s::text[]) AND state <> %s",
                (list(digests), RevisionState.FORGOTTEN.value),
            )
            return {str(r[0]) for r in rows}


def _snapshot(conn: Connection) -> None:
    # READ COMMITTED gives each statement its own snapshot; one answer's parts must agree.
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")


_HISTORY: Final = sql.SQL(
    "{} WHERE tenant_id = %s AND user_id = %s AND event_type = ANY(%s::text[]) "
    "ORDER BY position"
).format(SELECT_EVENTS)


def _history(conn: Connection, tenant_id: str, user_id: str) -> list[StoredEvent]:
    rows = conn.execute(_HISTORY, (tenant_id, user_id, HISTORY_EVENT_TYPES))
    return [row_to_event(r) for r in rows]


def _dataset(conn: Connection, row: RevisionRow, max_ids: int) -> DatasetRows:
    # A personal dataset is the user's own interactions; a prior's spans the tenant.
    where = [sql.SQL("tenant_id = %s"), sql.SQL("position BETWEEN %s AND %s")]
    params: list[Any] = [row.tenant_id, row.dataset_from, row.dataset_to]
    if row.user_id != PRIOR_USER_ID:
        where.append(sql.SQL("user_id = %s"))
        params.append(row.user_id)
    where.append(sql.SQL("event_type = ANY(%s::text[])"))
    params.append(_INTERACTIONS)
    cond = sql.SQL(" AND ").join(where)
    counted = conn.execute(
        sql.SQL("SELECT count(*), count(redacted_at) FROM events WHERE {}").format(cond), params
    ).fetchone()
    count, redacted = (int(counted[0]), int(counted[1])) if counted else (0, 0)
    ids = [
        str(r[0])
        for r in conn.execute(
            sql.SQL("SELECT event_id FROM events WHERE {} ORDER BY position LIMIT %s").format(cond),
            [*params, max_ids],
        )
    ]
    return DatasetRows(count=count, redacted=redacted, event_ids=ids)


class MemoryAuditReads:
    """AuditReads over any EventStore's public reads (the twin for tests and tools; its
    parts are read one call at a time, which a single-threaded caller cannot tell)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def user_audit(self, tenant_id: str, user_id: str) -> UserAuditRows:
        s = self._store
        return UserAuditRows(
            user=s.get_user(tenant_id, user_id),
            revisions=s.list_revisions(tenant_id, user_id),
            head=s.get_head(tenant_id, user_id),
            served=served_revision(s, tenant_id, user_id),
            history=self._history(tenant_id, user_id),
        )

    def revision_audit(self, revision_id: str, *, max_ids: int) -> RevisionAuditRows | None:
        s = self._store
        row = s.get_revision(revision_id)
        if row is None:
            return None
        parent = row.parent_revision_id
        return RevisionAuditRows(
            revision=row,
            stream=s.list_revisions(row.tenant_id, row.user_id),
            parent=s.get_revision(parent) if parent else None,
            head=s.get_head(row.tenant_id, row.user_id),
            dataset=self._dataset(row, max_ids),
            history=self._history(row.tenant_id, row.user_id),
        )

    def live_adapter_digests(self, digests: Sequence[str]) -> set[str]:
        wanted = set(digests)
        return {
            r.adapter_digest
            for r in self._store.projection_state().revisions.values()
            if r.adapter_digest in wanted and r.state != RevisionState.FORGOTTEN
        }

    def _history(self, tenant_id: str, user_id: str) -> list[StoredEvent]:
        return self._store.read(
            tenant_id=tenant_id, user_id=user_id, event_types=HISTORY_EVENT_TYPES
        )

    def _dataset(self, row: RevisionRow, max_ids: int) -> DatasetRows:
        personal = row.user_id != PRIOR_USER_ID
        events = self._store.read(
            after=max(row.dataset_from - 1, 0),
            upto=row.dataset_to,
            tenant_id=row.tenant_id,
            user_id=row.user_id if personal else None,
            event_types=_INTERACTIONS,
        )
        # A forget erases every interaction of the user logged before its tombstone.
        forgotten = {
            u.user_id: u.forgotten_position or 0 for u in self._store.list_users(row.tenant_id)
        }
        redacted = sum(
            1 for e in events if e.position < forgotten.get(e.envelope.user_id, 0)
        )
        return DatasetRows(
            count=len(events),
            redacted=redacted,
            event_ids=[str(e.envelope.event_id) for e in events[:max_ids]],
        )


def audit_reads_for(store: EventStore) -> AuditReads:
    """The AuditReads that fits `store`: SQL for PostgreSQL, the twin otherwise."""
    if isinstance(store, PostgresEventStore):
        return PostgresAuditReads(store)
    return MemoryAuditReads(store)


if TYPE_CHECKING:  # mypy proves both classes satisfy the protocol
    _pg: AuditReads = PostgresAuditReads(PostgresEventStore(""))
    _mem: AuditReads = MemoryAuditReads(PostgresEventStore(""))
