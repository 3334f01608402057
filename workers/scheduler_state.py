"""What the training scheduler reads and writes in PostgreSQL.

Reads: who has enough new interaction events since their last revision (or last
request), per user and per tenant (for the prior), from the log and the revision
catalog. Writes: claimed cron slots and sent requests (migration 0050_scheduler.sql).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tessera.events.db import connect, translated, with_retry
from tessera.events.forget_scope import MarkedPrior, served_priors_to_retrain
from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID
from tessera.workers.training_request import TrainingRequest

_INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)


@dataclass(frozen=True, slots=True)
class Due:
    """A stream with `new_events` interactions after its last revision or request."""

    tenant_id: str
    user_id: str
    new_events: int
    up_to_position: int


# New interaction events of each user, counted after the greatest of: the last revision's
# dataset end, the last request sent, and the user's last forget.
_USERS_DUE = """
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
_PRIORS_DUE = """
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


class SchedulerState:
    """The scheduler's queries against one PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self._url = url

    def users_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        """Users (not priors) with at least `min_new_events` new interaction events."""
        params = {"types": _INTERACTIONS, "min_new": min_new_events, "tenant": tenant_id}
        rows = self._fetch("find users due", _USERS_DUE, params)
        return [Due(t, u, int(n), int(p)) for t, u, n, p in rows if u != PRIOR_USER_ID]

    def priors_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        """Tenants whose prior has at least `min_new_events` new events to learn from, or
        whose served prior learned from a user forgotten since (events/forget_scope.py)."""
        params = {
            "types": _INTERACTIONS, "min_new": min_new_events, "prior": PRIOR_USER_ID,
            "tenant": tenant_id,
        }
        rows = self._fetch("find priors due", _PRIORS_DUE, params)
        due = {t: Due(t, PRIOR_USER_ID, int(n), int(p)) for t, n, p in rows}
        # A served prior trained on a user forgotten since is retrained however few events
        # came in, up to the tombstone at least (so no decided revision covers it yet).
        for marked in self._marked_priors(tenant_id):
            t = marked.tenant_id
            up_to = max(marked.forgotten_position, self.tenant_head_position(t) or 0,
                        due[t].up_to_position if t in due else 0)
            due[t] = Due(t, PRIOR_USER_ID, due[t].new_events if t in due else 0, up_to)
        return [due[t] for t in sorted(due)]

    def _marked_priors(self, tenant_id: str | None) -> list[MarkedPrior]:
        def read() -> list[MarkedPrior]:
            with connect(self._url, autocommit=True) as conn, translated("find priors to retrain"):
                return served_priors_to_retrain(conn, tenant_id)

        marked: list[MarkedPrior] = with_retry(read)
        return marked

    def user_head_position(self, tenant_id: str, user_id: str) -> int | None:
        """Position of the user's latest interaction event (None without any)."""
        rows = self._fetch(
            "read user position",
            "SELECT max(position) FROM events WHERE tenant_id = %(t)s AND user_id = %(u)s"
            " AND event_type = ANY(%(types)s) AND redacted_at IS NULL",
            {"t": tenant_id, "u": user_id, "types": _INTERACTIONS},
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def tenant_head_position(self, tenant_id: str) -> int | None:
        """Position of the tenant's latest interaction event (None without any)."""
        rows = self._fetch(
            "read tenant position",
            "SELECT max(position) FROM events WHERE tenant_id = %(t)s"
            " AND event_type = ANY(%(types)s) AND redacted_at IS NULL",
            {"t": tenant_id, "types": _INTERACTIONS},
        )
        return int(rows[0][0]) if rows and rows[0][0] is not None else None

    def decided(self, tenant_id: str, user_id: str, up_to_position: int) -> bool:
        """Whether a revision of the stream covering `up_to_position` has been decided."""
        rows = self._fetch(
            "read revision state",
            "SELECT 1 FROM revisions WHERE tenant_id = %(t)s AND user_id = %(u)s"
            " AND dataset_to >= %(p)s AND state NOT IN ('trained', 'evaluated') LIMIT 1",
            {"t": tenant_id, "u": user_id, "p": up_to_position},
        )
        return bool(rows)

    def record_requests(self, requests: Sequence[TrainingRequest]) -> None:
        """Remember sent requests (idempotent on tenant, user, position)."""
        if not requests:
            return

        def write() -> None:
            with (
                connect(self._url) as conn,
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
        """Create the job's row at `slot` unless it exists; return the stored slot."""

        def write() -> datetime:
            with connect(self._url) as conn, translated("init scheduler run"):
                conn.execute(
                    "INSERT INTO scheduler_runs (job, last_slot) VALUES (%s, %s)"
                    " ON CONFLICT (job) DO NOTHING",
                    (job, slot),
                )
                row = conn.execute(
                    "SELECT last_slot FROM scheduler_runs WHERE job = %s", (job,)
                ).fetchone()
                assert row is not None  # just inserted or already there
                stored: datetime = row[0]
                return stored

        slot_now: datetime = with_retry(write)
        return slot_now

    def claim_slot(self, job: str, slot: datetime) -> bool:
        """Atomically advance the job to `slot`; True only for the one caller that did.
        This is what makes a slot run once across restarts and concurrent schedulers."""

        def write() -> bool:
            with connect(self._url) as conn, translated("claim scheduler slot"):
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
            with connect(self._url) as conn, translated("finish scheduler run"):
                conn.execute(
                    "UPDATE scheduler_runs SET finished_at = now(), requested = %s WHERE job = %s",
                    (requested, job),
                )

        with_retry(write)

    def _fetch(self, what: str, query: str, params: dict[str, object]) -> list[tuple[Any, ...]]:
        def read() -> list[tuple[Any, ...]]:
            with connect(self._url, autocommit=True) as conn, translated(what):
                rows: list[tuple[Any, ...]] = conn.execute(query.encode(), params).fetchall()
                return rows

        result: list[tuple[Any, ...]] = with_retry(read)
        return result
