"""What the training scheduler reads and writes, through `events.scheduler_runs`.

Reads: who has enough new interaction events since their last revision (or last
request), per user and per tenant (for the prior). Writes: claimed cron slots and sent
requests. The SQL (and its in-memory twin) lives in events/scheduler_runs.py; this adds
the scheduler's own rule for priors a forget marked, and speaks `TrainingRequest`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from tessera.events.night_reads import NightReads, PostgresNightReads
from tessera.events.scheduler_runs import (
    Due,
    PostgresSchedulerRuns,
    SchedulerRuns,
    SentRequest,
)
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.training_request import TrainingRequest

__all__ = ["Due", "SchedulerState"]


class SchedulerState:
    """The scheduler's state over `runs` (and the planner's reads over `night`), or over
    PostgreSQL when given a database URL."""

    def __init__(self, runs: str | SchedulerRuns, night: NightReads | None = None) -> None:
        self._runs: SchedulerRuns = PostgresSchedulerRuns(runs) if isinstance(runs, str) else runs
        self._night = night or (PostgresNightReads(runs) if isinstance(runs, str) else None)

    def users_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        """Users (not priors) with at least `min_new_events` new interaction events."""
        return self._runs.users_due(min_new_events, tenant_id=tenant_id)

    def priors_due(self, min_new_events: int, *, tenant_id: str | None = None) -> list[Due]:
        """Tenants whose prior has at least `min_new_events` new events to learn from, or
        whose served prior learned from a user forgotten since (events/forget_scope.py)."""
        due = {d.tenant_id: d for d in self._runs.priors_due(min_new_events, tenant_id=tenant_id)}
        # A served prior trained on a user forgotten since is retrained however few events
        # came in, up to the tombstone at least (so no decided revision covers it yet).
        for marked in self._runs.marked_priors(tenant_id):
            t = marked.tenant_id
            up_to = max(marked.forgotten_position, self.tenant_head_position(t) or 0,
                        due[t].up_to_position if t in due else 0)
            due[t] = Due(t, PRIOR_USER_ID, due[t].new_events if t in due else 0, up_to)
        return [due[t] for t in sorted(due)]

    def last_revision_times(self, tenant_id: str | None = None) -> dict[tuple[str, str], datetime]:
        """(tenant, user) -> when the user's latest personal revision was trained."""
        return self._night_reads().last_revision_times(tenant_id)

    def prior_heads(self, tenant_id: str | None = None) -> dict[str, str]:
        """tenant -> the revision id of the prior it serves."""
        return self._night_reads().prior_heads(tenant_id)

    def _night_reads(self) -> NightReads:
        if self._night is None:
            raise ValueError("this SchedulerState was built without NightReads: pass night=")
        return self._night

    def user_head_position(self, tenant_id: str, user_id: str) -> int | None:
        """Position of the user's latest interaction event (None without any)."""
        return self._runs.user_head_position(tenant_id, user_id)

    def tenant_head_position(self, tenant_id: str) -> int | None:
        """Position of the tenant's latest interaction event (None without any)."""
        return self._runs.tenant_head_position(tenant_id)

    def decided(self, tenant_id: str, user_id: str, up_to_position: int) -> bool:
        """Whether a revision of the stream covering `up_to_position` has been decided."""
        return self._runs.decided(tenant_id, user_id, up_to_position)

    def record_requests(self, requests: Sequence[TrainingRequest]) -> None:
        """Remember sent requests (idempotent on tenant, user, position)."""
        self._runs.record_requests(
            [SentRequest(r.tenant_id, r.user_id, r.up_to_position, r.trigger, r.requested_at)
             for r in requests]
        )

    def last_slot(self, job: str) -> datetime | None:
        return self._runs.last_slot(job)

    def init_job(self, job: str, slot: datetime) -> datetime:
        """Create the job's row at `slot` unless it exists; return the stored slot."""
        return self._runs.init_job(job, slot)

    def claim_slot(self, job: str, slot: datetime) -> bool:
        """Atomically advance the job to `slot`; True only for the one caller that did.
        This is what makes a slot run once across restarts and concurrent schedulers."""
        return self._runs.claim_slot(job, slot)

    def finish(self, job: str, requested: int) -> None:
        self._runs.finish(job, requested)
