"""Planning a revision: what to train on, what to warm-start from, what to beat.

Planning reads the store without a transaction (the store protocol has none), so it reads
as little as it can, once: the stream's revision list serves the idempotency check, the
head's row and the walk up its warm-start chain (`rests_on`), and the user's last forget
position serves both the dataset and the history check. A personal plan costs 6 store
reads (7 with a history to check), whatever the length of the user's chain.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from tessera.events.projections import RevisionRow
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers import metrics
from tessera.workers.dataset import DatasetSplit, build_dataset
from tessera.workers.history_gate import history_examples
from tessera.workers.revision_events import revision_id_for
from tessera.workers.revision_types import (
    DECIDED_STATES,
    INTERACTIONS,
    PipelineConfig,
    RevisionLog,
    RevisionOutcome,
    RevisionPlan,
    skipped,
)
from tessera.workers.training_request import TrainingRequest


def decided_covering(rows: Sequence[RevisionRow], up_to_position: int) -> RevisionRow | None:
    """Among a stream's revisions, a decided one that covers `up_to_position`."""
    for row in rows:
        if row.dataset_to >= up_to_position and row.state in DECIDED_STATES:
            return row
    return None


def already_decided(store: RevisionLog, request: TrainingRequest) -> RevisionRow | None:
    """A decided revision of the request's stream that covers the request's position."""
    return decided_covering(store.list_revisions(request.tenant_id, request.user_id),
                            request.up_to_position)


def head_row(
    store: RevisionLog, tenant_id: str, user_id: str, known: Sequence[RevisionRow] = ()
) -> RevisionRow | None:
    """The stream's head revision; taken from `known` (the stream's revisions, read
    already) when it is there, else read."""
    head = store.get_head(tenant_id, user_id)
    if head is None:
        return None
    for row in known:
        if row.revision_id == head.revision_id:
            return row
    return store.get_revision(head.revision_id)


def rests_on(
    store: RevisionLog, revision: RevisionRow, prior: RevisionRow,
    known: Mapping[str, RevisionRow] | None = None,
) -> bool:
    """Whether `prior` is the tenant-prior ancestor `revision` was warm-started from.
    Ancestors found in `known` (by id) are not read again."""
    known = known or {}
    current: RevisionRow | None = revision
    seen: set[str] = set()
    while current is not None and current.revision_id not in seen:
        if current.revision_id == prior.revision_id:
            return True
        if current.user_id == PRIOR_USER_ID:
            return False  # reached an older prior
        seen.add(current.revision_id)
        parent_id = current.parent_revision_id
        if not parent_id:
            current = None
        elif parent_id == prior.revision_id:
            current = prior
        else:
            current = known.get(parent_id) or store.get_revision(parent_id)
    # A chain trained from the base model alone (no prior then): rebase on the prior.
    return False


def plan_personal(
    store: RevisionLog, config: PipelineConfig, request: TrainingRequest
) -> RevisionPlan | RevisionOutcome:
    """The plan for the user's next personal revision, or why none is needed."""
    t, u, upto = request.tenant_id, request.user_id, request.up_to_position
    revisions = store.list_revisions(t, u)
    done = decided_covering(revisions, upto)
    if done is not None:
        return skipped(request, f"revision {done.revision_id} ({done.state}) covers "
                                f"position {upto} already", done.revision_id)
    started = time.perf_counter()
    personal = head_row(store, t, u, revisions)
    prior = head_row(store, t, PRIOR_USER_ID)
    parent = personal or prior
    rival: RevisionRow | None = None
    after = personal.dataset_to if personal is not None else 0
    chain = {row.revision_id: row for row in revisions}
    if personal is not None and prior is not None and not rests_on(store, personal, prior, chain):
        # The tenant prior was refreshed since this user's chain started from it:
        # rebase on the new prior and learn the user's whole history again, or the
        # user would never benefit from it. The gate compares with the better of
        # the head and the new prior (stale_heads.better_baseline).
        parent, after, rival = prior, 0, prior
    forgotten = store.last_forgotten_position(t, u)
    after = max(after, forgotten)
    if after >= upto:
        return skipped(request, f"nothing new: data up to {after} is learned already")
    events = store.read(after=after, upto=upto, tenant_id=t, user_id=u, event_types=INTERACTIONS)
    split = build_dataset(events, holdout_k=config.holdout_k, from_position=after, to_position=upto)
    if len(split.train) < config.min_train_examples:
        return skipped(request, f"{len(split.train)} training examples in ({after}, {upto}] "
                                f"< {config.min_train_examples}")
    history = history_examples(store, t, u, before=after, limit=config.history_max,
                               revisions=revisions, forgotten_after=forgotten)
    dataset_s = time.perf_counter() - started
    metrics.record_stage("dataset", dataset_s)
    return RevisionPlan(
        tenant_id=t, user_id=u, kind="personal", revision_id=revision_id_for(t, u, upto),
        up_to_position=upto, trigger=request.trigger, parent=parent,
        baseline=personal or parent, rival=rival,
        dataset_from=after + 1, dataset_to=upto, dataset_digest=split.digest,
        train=split.train, heldout=split.heldout,
        dataset_params=personal_dataset_params(split, user_id=u, after=after),
        history=history, dataset_seconds=dataset_s,
    )


def personal_dataset_params(split: DatasetSplit, *, user_id: str, after: int) -> dict[str, Any]:
    """How to rebuild a personal dataset: the user's events in `(after, to]`."""
    return {
        "builder": "personal",
        "user_id": user_id,
        "after": after,
        "to": split.to_position,
        "holdout_k": split.holdout_k,
        "train_examples": len(split.train),
        "heldout_examples": len(split.heldout),
        "excluded": split.excluded,
        "skipped": split.skipped,
    }
