"""What the training scheduler reads and writes: who is due, and its own bookkeeping.

Reads: who has enough new interaction events since their last revision (or last
request), per user and per tenant (for the prior), from the log and the revision
catalog. Writes: claimed cron slots and sent requests (migration 0050_scheduler.sql).
`SchedulerRuns` has a PostgreSQL implementation and an in-memory twin over any
`EventStore`; tests/events/test_scheduler_runs_contract.py runs both.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from tessera.events.db import connect, translated, with_retry
from tessera.events.forget_scope import MarkedPrior, served_priors_to_retrain
from tessera.events.store import EventStore, StoredEvent
from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID, EventType, RevisionState

_INTERACTIONS: Final = sorted(str(t) for t in INTERACTION_TYPES)
_UNDECIDED: Final = frozenset({RevisionState.TRAINED, RevisionState.EVALUATED})


@dataclass(frozen=True, slots=True)
class Due:
    """A stream with `new_events` interactions after its last revision or request."""

    tenant_id: str
    user_id: str
    new_events: int
    up_to_position: int


@dataclass(frozen=True, slots=True)
class SentRequest:
    """A training request as the scheduler remembers it (one per stream and position)."""

    tenant_id: str
    user_id: str
    up_to_position: int
    trigger: str
    requested_at: datetime


class SchedulerRuns(Protocol):
    def users_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        """Users (not priors) with at least `min_new_events` interaction events after the
        greatest of their last revision's dataset end, last request and last forget."""
        ...

    def priors_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        """Tenants with at least `min_new_events` unerased interaction events after their
        prior's last dataset end or request (by tenant)."""
        ...

    def marked_priors(self, tenant_id: str | None = None) -> list[MarkedPrior]:
        """Served priors a forget named for retraining (events/forget_scope.py)."""
        ...

    def user_head_position(self, tenant_id: str, user_id: str) -> int | None:
        """Position of the user's latest unerased interaction event (None without any)."""
        ...

    def tenant_head_position(self, tenant_id: str) -> int | None:
        """Position of the tenant's latest unerased interaction event (None without any)."""
        ...

    def decided(self, tenant_id: str, user_id: str, up_to_position: int) -> bool:
        """Whether a revision of the stream covering `up_to_position` has been decided."""
        ...

    def record_requests(self, requests: Sequence[SentRequest]) -> None:
        """Remember sent requests (idempotent on tenant, user, position)."""
        ...

    def last_slot(self, job: str) -> datetime | None: ...

    def init_job(self, job: str, slot: datetime) -> datetime:
        """Create the job's row at `slot` unless it exists; return the stored slot."""
        ...

    def claim_slot(self, job: str, slot: datetime) -> bool:
        """Atomically advance the job to `slot` (only forward); True only for the one
        caller that did. This makes a slot run once across restarts and schedulers."""
        ...

    def finish(self, job: str, requested: int) -> None: ...


# New interaction events of each user, counted after the greatest of: the last revision's
# dataset end, the last request sent, and the user's last forget.
_USERS_DUE: Final = """
WITH last_rev AS (
    SELECT tenant_id, user_id, max(dataset_to) AS pos FROM revisions GROUP BY 1, 2
), last_req AS (
    SELECT tenant_id, user_id, max(up_to_position) AS pos FROM scheduler_requests GROUP BY 1, 2
)
SELECT e.tenant_id, e.user_id, count(*) AS n, max(e.position) AS up_to
FROM events e
JOIN users u ON u.tenant_id = e.tenant_id AND u.user_id = e.user_id
LEFT JOIN last_rev r ON r.tenant_id = e.tenant_id AND r.user_id = e.user_id
LEFT JOIN last_req q ON q.tenant_id = e.tenant_id AND q.user_id = e.user_id
WHERE e.event_type = ANY(%(types)s) AND e.redacted_at IS NULL
  AND (%(tenant)s::text IS NULL OR e.tenant_id = %(tenant)s::text)
  AND e.position > GREATEST(coalesce(r.pos, 0), coalesce(q.pos, 0),
                            coalesce(u.forgotten_position, 0))
GROUP BY e.tenant_id, e.user_id
HAVING count(*) >= %(min_new)s
ORDER BY e.tenant_id, e.user_id
"""

# New interaction events of each tenant after its prior's last dataset end or request.
_PRIORS_DUE: Final = """
WITH last_rev AS (
    SELECT tenant_id, max(dataset_to) AS pos FROM revisions
    WHERE user_id = %(prior)s GROUP BY 1
), last_req AS (
    SELECT tenant_id, max(up_to_position) AS pos FROM scheduler_requests
    WHERE user_id = %(prior)s GROUP BY 1
)
SELECT e.tenant_id, count(*) AS n, max(e.position) AS up_to
FROM events e
LEFT JOIN last_rev r ON r.tenant_id = e.tenant_id
LEFT JOIN last_req q ON q.tenant_id = e.tenant_id
WHERE e.event_type = ANY(%(types)s) AND e.redacted_at IS NULL
  AND (%(tenant)s::text IS NULL OR e.tenant_id = %(tenant)s::text)
  AND e.position > GREATEST(coalesce(r.pos, 0), coalesce(q.pos, 0))
GROUP BY e.tenant_id
HAVING count(*) >= %(min_new)s
ORDER BY e.tenant_id
"""


class PostgresSchedulerRuns:
    """SchedulerRuns on PostgreSQL: one short connection per call, transient errors
    retried (the scheduler runs rarely; a pool would only hold connections idle)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def users_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        params = {"types": _INTERACTIONS, "min_new": min_new_events, "tenant": tenant_id}
        rows = self._fetch("find users due", _USERS_DUE, params)
        return [Due(t, u, int(n), int(p)) for t, u, n, p in rows if u != PRIOR_USER_ID]

    def priors_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        params = {
            "types": _INTERACTIONS, "min_new": min_new_events, "prior": PRIOR_USER_ID,
            "tenant": tenant_id,
        }
        rows = self._fetch("find priors due", _PRIORS_DUE, params)
        return [Due(t, PRIOR_USER_ID, int(n), int(p)) for t, n, p in rows]

    def marked_priors(self, tenant_id: str | None = None) -> list[MarkedPrior]:
        def read() -> list[MarkedPrior]:
            with connect(self.url, autocommit=True) as conn, translated("find priors to retrain"):
                return served_priors_to_retrain(conn, tenant_id)

        marked: list[MarkedPrior] = with_retry(read)
        return marked

    def user_head_position(self, tenant_id: str, user_id: str) -> int | None:
        rows = self._fetch(
            "read user position",
            "SELECT max(position) FROM events WHERE tenant_id = %(t)s AND user_id = %(u)s"
            " AND event_type = ANY(%(types)s) AND redacted_at IS NULL",
            {"t": tenant_id, "u": user_id, "types": _INTERACTIONS},
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def tenant_head_position(self, tenant_id: str) -> int | None:
        rows = self._fetch(
            "read tenant position",
            "SELECT max(position) FROM events WHERE tenant_id = %(t)s"
            " AND event_type = ANY(%(types)s) AND redacted_at IS NULL",
            {"t": tenant_id, "types": _INTERACTIONS},
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def decided(self, tenant_id: str, user_id: str, up_to_position: int) -> bool:
        rows = self._fetch(
            "read revision state",
            "SELECT 1 FROM revisions WHERE tenant_id = %(t)s AND user_id = %(u)s"
            " AND dataset_to >= %(p)s AND state NOT IN ('trained', 'evaluated') LIMIT 1",
            {"t": tenant_id, "u": user_id, "p": up_to_position},
        )
        return bool(rows)

    def record_requests(self, requests: Sequence[SentRequest]) -> None:
        if not requests:
            return

        def write() -> None:
            with (
                connect(self.url) as conn,
                translated("record training requests"),
                conn.cursor() as cur,
            ):
                cur.executemany(
                    "INSERT INTO scheduler_requests"
                    " (tenant_id, user_id, up_to_position, trigger, requested_at)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    [(r.tenant_id, r.user_id, r.up_to_position, r.trigger, r.requested_at)
                     for r in requests],
                )

        with_retry(write)

    def last_slot(self, job: str) -> datetime | None:
        rows = self._fetch(
            "read scheduler run",
            "SELECT last_slot FROM scheduler_runs WHERE job = %(j)s",
            {"j": job},
        )
        return rows[0][0] if rows else None

    def init_job(self, job: str, slot: datetime) -> datetime:
        def write() -> datetime:
            with connect(self.url) as conn, translated("init scheduler run"):
                conn.execute(
                    "INSERT INTO scheduler_runs (job, last_slot) VALUES (%s, %s)"
                    " ON CONFLICT (job) DO NOTHING",
                    (job, slot),
                )
                row = conn.execute(
                    "SELECT last_slot FROM scheduler_runs WHERE job = %s", (job,)
                ).fetchone()
                if row is None:  # just inserted or already there, in this transaction
                    raise RuntimeError(f"scheduler job {job!r} vanished while being created")
                stored: datetime = row[0]
                return stored

        slot_now: datetime = with_retry(write)
        return slot_now

    def claim_slot(self, job: str, slot: datetime) -> bool:
        def write() -> bool:
            with connect(self.url) as conn, translated("claim scheduler slot"):
                cur = conn.execute(
                    "UPDATE scheduler_runs SET last_slot = %s, started_at = now(),"
                    " finished_at = NULL WHERE job = %s AND last_slot < %s",
                    (slot, job, slot),
                )
                return bool(cur.rowcount == 1)

        claimed: bool = with_retry(write)
        return claimed

    def finish(self, job: str, requested: int) -> None:
        def write() -> None:
            with connect(self.url) as conn, translated("finish scheduler run"):
                conn.execute(
                    "UPDATE scheduler_runs SET finished_at = now(), requested = %s WHERE job = %s",
                    (requested, job),
                )

        with_retry(write)

    def _fetch(self, what: str, query: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        def read() -> list[tuple[Any, ...]]:
            with connect(self.url, autocommit=True) as conn, translated(what):
                rows: list[tuple[Any, ...]] = conn.execute(query.encode(), params).fetchall()
                return rows

        result: list[tuple[Any, ...]] = with_retry(read)
        return result


class MemorySchedulerRuns:
    """The twin: reads from any EventStore's public reads, bookkeeping in memory."""

    def __init__(self, store: EventStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str, int], SentRequest] = {}
        self._slots: dict[str, datetime] = {}
        self._requested: dict[str, int] = {}

    def users_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        state = self._store.projection_state()
        since: dict[tuple[str, str], int] = {
            key: u.forgotten_position or 0 for key, u in state.users.items()
        }
        for r in state.revisions.values():
            key = (r.tenant_id, r.user_id)
            since[key] = max(since.get(key, 0), r.dataset_to)
        self._after_requests(since, lambda k: k)
        counted = self._count(tenant_id, lambda e: (e.envelope.tenant_id, e.envelope.user_id),
                              since, known=set(state.users))
        return [Due(t, u, n, p) for (t, u), (n, p) in sorted(counted.items())
                if n >= min_new_events and u != PRIOR_USER_ID]

    def priors_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        since: dict[str, int] = {}
        for r in self._store.projection_state().revisions.values():
            if r.user_id == PRIOR_USER_ID:
                since[r.tenant_id] = max(since.get(r.tenant_id, 0), r.dataset_to)
        self._after_requests(since, lambda k: k[0], prior=True)
        counted = self._count(tenant_id, lambda e: e.envelope.tenant_id, since)
        return [Due(t, PRIOR_USER_ID, n, p) for t, (n, p) in sorted(counted.items())
                if n >= min_new_events]

    def marked_priors(self, tenant_id: str | None = None) -> list[MarkedPrior]:
        heads = self._store.projection_state().heads
        tombstones = self._store.read(tenant_id=tenant_id, event_types=[EventType.USER_FORGOTTEN])
        out = []
        for (t, uid), head in sorted(heads.items()):
            if uid != PRIOR_USER_ID or (tenant_id is not None and t != tenant_id):
                continue
            naming = [e.position for e in tombstones if e.envelope.tenant_id == t and
                      head.revision_id in e.envelope.data.get("retrain_prior_revision_ids", [])]
            if naming:
                out.append(MarkedPrior(t, head.revision_id, max(naming)))
        return out

    def user_head_position(self, tenant_id: str, user_id: str) -> int | None:
        return max((e.position for e in self._unerased(tenant_id, user_id)), default=None)

    def tenant_head_position(self, tenant_id: str) -> int | None:
        return max((e.position for e in self._unerased(tenant_id, None)), default=None)

    def decided(self, tenant_id: str, user_id: str, up_to_position: int) -> bool:
        return any(
            r.dataset_to >= up_to_position and r.state not in _UNDECIDED
            for r in self._store.list_revisions(tenant_id, user_id)
        )

    def record_requests(self, requests: Sequence[SentRequest]) -> None:
        with self._lock:
            for r in requests:
                self._requests.setdefault((r.tenant_id, r.user_id, r.up_to_position), r)

    def last_slot(self, job: str) -> datetime | None:
        with self._lock:
            return self._slots.get(job)

    def init_job(self, job: str, slot: datetime) -> datetime:
        with self._lock:
            return self._slots.setdefault(job, slot)

    def claim_slot(self, job: str, slot: datetime) -> bool:
        with self._lock:
            last = self._slots.get(job)
            if last is None or not last < slot:
                return False
            self._slots[job] = slot
            return True

    def finish(self, job: str, requested: int) -> None:
        with self._lock:
            if job in self._slots:
                self._requested[job] = requested

    def _after_requests(self, since: dict[Any, int], key: Any, *, prior: bool = False) -> None:
        with self._lock:
            sent = list(self._requests.values())
        for r in sent:
            if prior and r.user_id != PRIOR_USER_ID:
                continue  # a tenant's prior is due after the prior's own requests only
            k = key((r.tenant_id, r.user_id))
            since[k] = max(since.get(k, 0), r.up_to_position)

    def _unerased(self, tenant_id: str | None, user_id: str | None) -> list[StoredEvent]:
        """Interaction events a forget has not erased (those before the user's latest
        tombstone are: the PostgreSQL store's `redacted_at IS NOT NULL`)."""
        forgotten = {
            key: u.forgotten_position or 0
            for key, u in self._store.projection_state().users.items()
        }
        return [
            e for e in self._store.read(tenant_id=tenant_id, user_id=user_id,
                                        event_types=_INTERACTIONS)
            if e.position > forgotten.get((e.envelope.tenant_id, e.envelope.user_id), 0)
        ]

    def _count(self, tenant_id: str | None, key: Any, since: dict[Any, int],
               known: set[tuple[str, str]] | None = None) -> dict[Any, tuple[int, int]]:
        counted: dict[Any, tuple[int, int]] = {}
        for e in self._unerased(tenant_id, None):
            k = key(e)
            if known is not None and (e.envelope.tenant_id, e.envelope.user_id) not in known:
                continue
            if e.position > since.get(k, 0):
                n, _ = counted.get(k, (0, 0))
                counted[k] = (n + 1, e.position)
        return counted


if TYPE_CHECKING:  # mypy proves both classes satisfy the protocol
    from tessera.events.memory_store import MemoryEventStore

    _pg: SchedulerRuns = PostgresSchedulerRuns("")
    _mem: SchedulerRuns = MemorySchedulerRuns(MemoryEventStore())
