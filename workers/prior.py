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
- every user's last `holdout_k` examples are left out of the prior's training: they are
  what the user's next personal candidate holds out for its gate, and the examples the
  user's current head was judged on (its recorded `heldout_positions`) are left out too.
  Otherwise the prior would be measured on data it trained on whenever it is compared
  with a personal model (the better-of gate, the stale-head check), and it would win
  those comparisons unfairly;
- `eval_users` users (the first by sha256 of their id, stable as users come and go) lend
  their left-out last `holdout_k` examples as the prior's held-out set.

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
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tessera.events.projections import RevisionRow, UserRow
from tessera.schemas.events import PRIOR_USER_ID, EventType
from tessera.workers import metrics
from tessera.workers.dataset import Example, build_dataset
from tessera.workers.revision_events import revision_id_for
from tessera.workers.revision_plan import decided_covering, head_row
from tessera.workers.revision_types import (
    INTERACTIONS,
    PipelineConfig,
    RevisionLog,
    RevisionOutcome,
    RevisionPlan,
    skipped,
)
from tessera.workers.training_request import TrainingRequest


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
    exclude_positions: Mapping[str, Collection[int]] | None = None,
    personal_holdout: bool = True,
    order: str = "user",
) -> PriorSample:
    """The prior's training and held-out examples (see the module docstring). `users`
    pins the user list (when rebuilding a recorded prior); by default every user with
    interactions. `exclude_positions`: per user, positions never to train on (the current
    heads' held-out examples). `personal_holdout` False rebuilds priors recorded before
    every user's last examples were left out (only evaluators held out then).

    `order` "user": the training (and held-out) examples user by user (users sorted, each
    user's in log order), so the same events give the prior the same examples in the same
    order however the partitions interleaved them in the log (in "position" order, which
    priors recorded before Dec 3 use, two replays of one history trained on different
    orders)."""
    if order not in ("user", "position"):
        raise ValueError(f"order must be 'user' or 'position', got {order!r}")
    if users is None:
        users = sampled_users(store.list_users(tenant_id))
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
                            user_id=user_id, event_types=INTERACTIONS)
        split = build_dataset(events, holdout_k=0, from_position=after, to_position=up_to_position)
        if personal_holdout:
            reserved, kept = _reserve_last(split.train, holdout_k)
            skip = set((exclude_positions or {}).get(user_id, ()))
            examples = [e for e in kept if e.position not in skip][-per_user_cap:]
            train.extend(examples)
            if user_id in evaluators:
                heldout.extend(reserved)
            examples = [*examples, *reserved]
        else:
            examples = list(split.train[-per_user_cap:])
            k = min(holdout_k, len(examples) // 2) if user_id in evaluators else 0
            train.extend(examples[: len(examples) - k])
            heldout.extend(examples[len(examples) - k:])
        per_user[user_id] = hashlib.sha256(
            json.dumps([e.canonical() for e in examples], sort_keys=True).encode()
        ).hexdigest()
    if order == "position":
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
        "personal_holdout": personal_holdout,
        **({"order": order} if order != "position" else {}),
        "excluded_positions": {u: sorted(p) for u, p in sorted((exclude_positions or {}).items())
                               if p and personal_holdout},
        "train_examples": len(train),
        "heldout_examples": len(heldout),
    }
    digest_doc = {"format": "tessera.prior-dataset.v1", "params": params, "per_user": per_user,
                  "heldout": [e.position for e in heldout]}
    digest = hashlib.sha256(json.dumps(digest_doc, sort_keys=True).encode()).hexdigest()
    return PriorSample(tuple(train), tuple(heldout), digest, params)


def _reserve_last(
    examples: Sequence[Example], holdout_k: int
) -> tuple[list[Example], list[Example]]:
    """(the last `holdout_k` examples, the rest); at most half of them are reserved, so a
    user with little history still teaches the prior something."""
    k = min(holdout_k, len(examples) // 2)
    return list(examples[len(examples) - k:]), list(examples[: len(examples) - k])


def sampled_users(users: Sequence[UserRow]) -> list[str]:
    """The users a prior samples: every user of the tenant with interactions."""
    return sorted(row.user_id for row in users
                  if row.user_id != PRIOR_USER_ID and row.interactions > 0)


def heads_heldout_positions(
    store: RevisionLog, tenant_id: str, users: Sequence[UserRow] | None = None
) -> dict[str, list[int]]:
    """Per user of `tenant_id` (`users`, when read already), the held-out positions its
    personal head was judged on."""
    out: dict[str, list[int]] = {}
    for user in store.list_users(tenant_id) if users is None else users:
        if user.user_id == PRIOR_USER_ID:
            continue
        head = head_row(store, tenant_id, user.user_id)
        if head is not None and head.kind == "personal":
            positions = [int(p) for p in head.provenance.get("heldout_positions", [])]
            if positions:
                out[user.user_id] = positions
    return out


def plan_prior(
    store: RevisionLog, config: PipelineConfig, request: TrainingRequest
) -> RevisionPlan | RevisionOutcome:
    """The plan for a new prior of `request.tenant_id` up to `request.up_to_position`.
    Store reads: the prior stream's revisions and the tenant's users once each (shared
    by the checks that need them), then 2 per user for the sample and 2 per user for
    the heads' held-out positions, the prior's head and the forgets since it."""
    t = request.tenant_id
    priors = store.list_revisions(t, PRIOR_USER_ID)
    done = decided_covering(priors, request.up_to_position)
    if done is not None:
        return skipped(request, f"prior {done.revision_id} ({done.state}) covers position "
                                f"{request.up_to_position} already", done.revision_id)
    started = time.perf_counter()
    users = store.list_users(t)
    sample = sample_prior_dataset(
        store, t, request.up_to_position, users=sampled_users(users),
        max_per_user=config.prior_max_events_per_user, max_events=config.prior_max_events,
        eval_users=config.prior_eval_users, holdout_k=config.holdout_k,
        exclude_positions=heads_heldout_positions(store, t, users),
    )
    if len(sample.train) < config.min_train_examples:
        return skipped(request, f"{len(sample.train)} training examples for the prior "
                                f"< {config.min_train_examples}")
    if not sample.heldout:
        return skipped(request, "no user has enough examples to hold some out for the gate")
    dataset_s = time.perf_counter() - started
    metrics.record_stage("dataset", dataset_s)
    current = head_row(store, t, PRIOR_USER_ID, priors)
    # A prior that learned from a user forgotten since is no bar to clear: its
    # replacement must beat the base, or the forgotten data would stay served.
    baseline = None if current is not None and forgotten_since(store, current) else current
    return RevisionPlan(
        tenant_id=t, user_id=PRIOR_USER_ID, kind="prior",
        revision_id=revision_id_for(t, PRIOR_USER_ID, request.up_to_position),
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

