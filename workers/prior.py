"""The tenant prior: one adapter trained on a capped, balanced sample of all its users.

Measured on real speakers, an adapter trained on everyone's history beats each person's
own adapter trained from the base alone: small per-user data mostly teaches the domain.
So the prior is trained first and personal revisions start from it (ARCHITECTURE.md).

Sample (deterministic, recorded in the provenance so it can be rebuilt):
- every user of the tenant with interactions (forgotten content is never read: only
  events after a user's last forget count);
- per user, the most recent `per_user_cap` examples up to `up_to_position`, where
  `per_user_cap = min(max_per_user, max(1, max_events // n_users))` — balanced, so a
  chatty user cannot drown the others;
- `eval_users` users (the first by sha256 of their id, stable as users come and go) give
  their last `holdout_k` examples as the prior's held-out set; nobody else holds out.

The prior is trained from the base model (its parent is None): its data is a fresh sample
of the whole history each time, not the increments a personal warm start assumes. It is
gated against the tenant's current prior (else the base) on those held-out examples and
the shared regression set, and recorded, promoted and published like any revision, in
the stream `PRIOR_USER_ID`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID, EventType
from tessera.workers import metrics
from tessera.workers.dataset import Example, build_dataset
from tessera.workers.revision_events import revision_id_for
from tessera.workers.training_request import TrainingRequest

if TYPE_CHECKING:
    from tessera.events.projections import RevisionRow
    from tessera.workers.pipeline import (
        RevisionLog,
        RevisionOutcome,
        RevisionPipeline,
        RevisionPlan,
    )


@dataclass(frozen=True)
class PriorSample:
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    digest: str
    params: dict[str, Any]


def _rank(user_id: str) -> str:
    return hashlib.sha256(user_id.encode()).hexdigest()


def sample_prior_dataset(
    store: RevisionLog,
    tenant_id: str,
    up_to_position: int,
    *,
    max_per_user: int,
    max_events: int,
    eval_users: int,
    holdout_k: int,
    users: Sequence[str] | None = None,
) -> PriorSample:
    """The prior's training and held-out examples (see the module docstring). `users`
    pins the user list (when rebuilding a recorded prior); by default every user with
    interactions."""
    if users is None:
        users = sorted(
            row.user_id for row in store.list_users(tenant_id)
            if row.user_id != PRIOR_USER_ID and row.interactions > 0
        )
    users = sorted(users)
    per_user_cap = min(max_per_user, max(1, max_events // max(1, len(users))))
    evaluators = set(sorted(users, key=_rank)[:eval_users])
    train: list[Example] = []
    heldout: list[Example] = []
    per_user: dict[str, str] = {}
    # Each user's last forget when sampled: a later forget makes the log refuse this prior
    # (events/forget_guard.py) and marks it for retraining.
    forgotten_after: dict[str, int] = {}
    for user_id in users:
        after = store.last_forgotten_position(tenant_id, user_id)
        if after:
            forgotten_after[user_id] = after
        events = store.read(after=after, upto=up_to_position, tenant_id=tenant_id,
                            user_id=user_id, event_types=_interactions())
        split = build_dataset(events, holdout_k=0, from_position=after, to_position=up_to_position)
        examples = split.train[-per_user_cap:]
        k = min(holdout_k, len(examples) // 2) if user_id in evaluators else 0
        train.extend(examples[: len(examples) - k])
        heldout.extend(examples[len(examples) - k:])
        per_user[user_id] = hashlib.sha256(
            json.dumps([e.canonical() for e in examples], sort_keys=True).encode()
        ).hexdigest()
    train.sort(key=lambda e: e.position)
    heldout.sort(key=lambda e: e.position)
    params = {
        "builder": "prior",
        "users": list(users),
        "eval_users": sorted(evaluators),
        "forgotten_after": forgotten_after,
        "to": up_to_position,
        "max_per_user": max_per_user,
        "max_events": max_events,
        "per_user_cap": per_user_cap,
        "holdout_k": holdout_k,
        "train_examples": len(train),
        "heldout_examples": len(heldout),
    }
    digest_doc = {"format": "tessera.prior-dataset.v1", "params": params, "per_user": per_user,
                  "heldout": [e.position for e in heldout]}
    digest = hashlib.sha256(json.dumps(digest_doc, sort_keys=True).encode()).hexdigest()
    return PriorSample(tuple(train), tuple(heldout), digest, params)


def plan_prior(
    pipeline: RevisionPipeline, request: TrainingRequest
) -> RevisionPlan | RevisionOutcome:
    """The plan for a new prior of `request.tenant_id` up to `request.up_to_position`."""
    from tessera.workers.pipeline import RevisionPlan, skipped

    done = pipeline.already_decided(request)
    if done is not None:
        return skipped(request, f"prior {done.revision_id} ({done.state}) covers position "
                                f"{request.up_to_position} already", done.revision_id)
    started = time.perf_counter()
    cfg = pipeline.config
    sample = sample_prior_dataset(
        pipeline.store, request.tenant_id, request.up_to_position,
        max_per_user=cfg.prior_max_events_per_user, max_events=cfg.prior_max_events,
        eval_users=cfg.prior_eval_users, holdout_k=cfg.holdout_k,
    )
    if len(sample.train) < cfg.min_train_examples:
        return skipped(request, f"{len(sample.train)} training examples for the prior "
                                f"< {cfg.min_train_examples}")
    if not sample.heldout:
        return skipped(request, "no user has enough examples to hold some out for the gate")
    dataset_s = time.perf_counter() - started
    metrics.record_stage("dataset", dataset_s)
    current = pipeline.head_row(request.tenant_id, PRIOR_USER_ID)
    # A prior that learned from a user forgotten since is no bar to clear: its
    # replacement must beat the base, or the forgotten data would stay served.
    baseline = None if current is not None and forgotten_since(pipeline.store, current) else current
    return RevisionPlan(
        tenant_id=request.tenant_id, user_id=PRIOR_USER_ID, kind="prior",
        revision_id=revision_id_for(request.tenant_id, PRIOR_USER_ID, request.up_to_position),
        up_to_position=request.up_to_position, trigger=request.trigger,
        parent=None, baseline=baseline, dataset_from=1, dataset_to=request.up_to_position,
        dataset_digest=sample.digest, train=sample.train, heldout=sample.heldout,
        dataset_params=sample.params, dataset_seconds=dataset_s,
    )


def forgotten_since(store: RevisionLog, prior: RevisionRow) -> bool:
    """Whether a forget after `prior` was trained named it for retraining (the
    tombstone's `retrain_prior_revision_ids`)."""
    tombstones = store.read(after=prior.trained_position, tenant_id=prior.tenant_id,
                            event_types=[EventType.USER_FORGOTTEN])
    return any(prior.revision_id in ev.envelope.data.get("retrain_prior_revision_ids", [])
               for ev in tombstones)


def _interactions() -> list[str]:
    return sorted(str(t) for t in INTERACTION_TYPES)
