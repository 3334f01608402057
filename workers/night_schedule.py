"""The nightly job's personal requests, planned (workers/night_plan.py): who is due, in what
order, within tonight's budget, in which groups.

Candidates are the users with any new interaction events; the planner skips those below
`min_new_events`, orders each tenant's users, fits the budget round-robin across tenants
and groups the chosen by (tenant, prior, training config). A group of one is sent as a
plain `TrainingRequest` (the path the threshold trigger and `tessera train` take); a
larger one as one `TrainingGroup`, trained in one batched pass (workers/group_night.py).
Deferred users are not requested, so they stay due and come first on a later night.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tessera.workers.night_plan import NightCandidate, NightPlan, PlanConfig, plan_night
from tessera.workers.scheduler_state import Due, SchedulerState
from tessera.workers.training_request import TrainingGroup, TrainingRequest, Trigger

log = logging.getLogger(__name__)


def config_key(train_overrides: dict[str, Any], personal_overrides: dict[str, Any]) -> str:
    """Which personal training config the trainers use (same key: same adapter shape);
    every user of a deployment shares it today, so it only separates deployments."""
    raw = json.dumps([train_overrides, personal_overrides], sort_keys=True, default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class NightRequests:
    """Tonight's personal requests: alone (plan order) and in groups, and the plan."""

    singles: list[TrainingRequest]
    groups: list[TrainingGroup]
    plan: NightPlan

    @property
    def requests(self) -> list[TrainingRequest]:
        """Every personal request, grouped or not."""
        return self.singles + [m for g in self.groups for m in g.members]


def candidates(state: SchedulerState, due: Sequence[Due], *, key: str,
               tenant_id: str | None = None) -> list[NightCandidate]:
    """The due users as the planner sees them (two reads, whatever the population)."""
    times = state.last_revision_times(tenant_id)
    priors = state.prior_heads(tenant_id)
    return [NightCandidate(d.tenant_id, d.user_id, d.new_events,
                           times.get((d.tenant_id, d.user_id)), priors.get(d.tenant_id), key)
            for d in due]


def plan_requests(state: SchedulerState, config: PlanConfig, *, key: str, trigger: Trigger,
                  tenant_id: str | None = None) -> NightRequests:
    """Plan tonight over every user with new events and turn the plan into requests."""
    due = state.users_due(1, tenant_id=tenant_id)
    plan = plan_night(candidates(state, due, key=key, tenant_id=tenant_id), config)
    up_to = {(d.tenant_id, d.user_id): d.up_to_position for d in due}

    def request(c: NightCandidate) -> TrainingRequest:
        return TrainingRequest(tenant_id=c.tenant_id, user_id=c.user_id,
                               up_to_position=up_to[(c.tenant_id, c.user_id)], trigger=trigger)

    alone = {(g.members[0].tenant_id, g.members[0].user_id)
             for g in plan.groups if len(g.members) == 1}
    singles = [request(c) for c in plan.chosen if (c.tenant_id, c.user_id) in alone]
    groups = [TrainingGroup.of([request(c) for c in g.members])
              for g in plan.groups if len(g.members) > 1]
    log.info("night planned: %d users in %d groups, %d alone, %d deferred, %d below %d new "
             "events, ~%.0f s estimated", sum(len(g.members) for g in groups), len(groups),
             len(singles), len(plan.deferred), len(plan.skipped), config.min_new_events,
             plan.estimated_seconds)
    return NightRequests(singles, groups, plan)
