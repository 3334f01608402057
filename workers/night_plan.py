"""The night, planned: which users get a revision tonight, in what order, in which groups.

A pure function of the population's candidates (from the projections: new events since
the user's head, when their last revision was made, their tenant, the prior they warm-start
from and the training config they use) and a budget:
1. skip users without enough signal (fewer than `min_new_events` new events);
2. order each tenant's users: the longest without a revision first (never trained before
   anyone trained), then the most new events, then the user id (a stable tie-break);
3. fit the budget (users and/or estimated seconds per night) fairly across tenants: one
   user per tenant per round, tenants in id order, so a tenant with ten thousand users
   cannot take the night from one with ten; a user who does not fit the remaining seconds
   is deferred and the round goes on with cheaper ones;
4. group the chosen users by (tenant, prior, config) into groups of at most `group_size`,
   in the order they were chosen: a group trains in one batched pass (`group_trainer`),
   which needs one adapter shape and warm-start lineage per group; and each revision's
   provenance lists its group, which one tenant's audit must not show another's users in.
Deferred users keep their events: they are candidates again the next night, older by then,
so they move up the order.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class NightCandidate:
    """A user who might get a revision tonight."""

    tenant_id: str
    user_id: str
    new_events: int  # interaction events since the user's head revision
    last_revision_at: datetime | None  # None: never trained
    prior_id: str | None  # the tenant prior revision the user warm-starts from (None: base)
    config_key: str  # digest of the user's training config (same key: same adapter shape)


class PlanConfig(BaseModel):
    """The night's budget and grouping (recorded with the plan)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_new_events: int = Field(20, ge=1, description="Fewest new events worth a revision.")
    max_users: int | None = Field(None, ge=0, description="Most users per night (None: any).")
    max_seconds: float | None = Field(
        None, ge=0, description="Most estimated training seconds per night (None: any).")
    seconds_per_user: float = Field(
        30.0, ge=0, description="Estimated fixed cost of one user's revision in a group.")
    seconds_per_event: float = Field(
        0.5, ge=0, description="Estimated extra cost per new event (their training examples).")
    group_size: int = Field(16, ge=1, description="Users per batched training pass (K).")

    def cost(self, candidate: NightCandidate) -> float:
        return self.seconds_per_user + self.seconds_per_event * candidate.new_events


@dataclass(frozen=True, slots=True)
class PlannedGroup:
    tenant_id: str
    prior_id: str | None
    config_key: str
    members: tuple[NightCandidate, ...]


@dataclass(frozen=True, slots=True)
class NightPlan:
    groups: tuple[PlannedGroup, ...]
    chosen: tuple[NightCandidate, ...]  # in the order the budget took them
    deferred: tuple[NightCandidate, ...]  # enough signal, but over tonight's budget
    skipped: tuple[tuple[NightCandidate, str], ...]  # (candidate, why), not enough signal
    estimated_seconds: float


def _order_key(c: NightCandidate) -> tuple[int, float, int, str]:
    # never trained first, then the oldest revision, then the most new events
    stamp = c.last_revision_at.timestamp() if c.last_revision_at is not None else 0.0
    return (0 if c.last_revision_at is None else 1, stamp, -c.new_events, c.user_id)


def _round_robin(queues: dict[str, deque[NightCandidate]], config: PlanConfig
                 ) -> tuple[list[NightCandidate], list[NightCandidate], float]:
    chosen: list[NightCandidate] = []
    deferred: list[NightCandidate] = []
    spent = 0.0
    tenants = sorted(queues)
    while any(queues[t] for t in tenants):
        for tenant in tenants:
            queue = queues[tenant]
            while queue:  # this tenant's next user who fits; the unfit are deferred
                candidate = queue.popleft()
                full = config.max_users is not None and len(chosen) >= config.max_users
                over = config.max_seconds is not None and \
                    spent + config.cost(candidate) > config.max_seconds
                if full or over:
                    deferred.append(candidate)
                    continue
                chosen.append(candidate)
                spent += config.cost(candidate)
                break
    return chosen, deferred, spent


def _groups(chosen: Sequence[NightCandidate], size: int) -> list[PlannedGroup]:
    by_key: dict[tuple[str, str | None, str], list[NightCandidate]] = defaultdict(list)
    for c in chosen:  # dicts keep insertion order: keys in order of first choice
        by_key[(c.tenant_id, c.prior_id, c.config_key)].append(c)
    return [PlannedGroup(tenant, prior, key, tuple(members[i:i + size]))
            for (tenant, prior, key), members in by_key.items()
            for i in range(0, len(members), size)]


def plan_night(candidates: Sequence[NightCandidate], config: PlanConfig) -> NightPlan:
    """Tonight's groups, the users deferred by the budget and those skipped (see module)."""
    seen: set[tuple[str, str]] = set()
    skipped: list[tuple[NightCandidate, str]] = []
    queues: dict[str, list[NightCandidate]] = defaultdict(list)
    for c in candidates:
        if (c.tenant_id, c.user_id) in seen:
            raise ValueError(f"user {c.tenant_id}/{c.user_id} is a candidate twice")
        seen.add((c.tenant_id, c.user_id))
        if c.new_events < config.min_new_events:
            skipped.append((c, f"{c.new_events} new events < {config.min_new_events}"))
        else:
            queues[c.tenant_id].append(c)
    ordered = {t: deque(sorted(q, key=_order_key)) for t, q in queues.items()}
    chosen, deferred, spent = _round_robin(ordered, config)
    return NightPlan(groups=tuple(_groups(chosen, config.group_size)), chosen=tuple(chosen),
                     deferred=tuple(deferred), skipped=tuple(skipped), estimated_seconds=spent)
