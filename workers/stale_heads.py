"""Never worse than the shared model: personal heads against a refreshed tenant prior.

The promise (ARCHITECTURE.md, "Two layers of adaptation"): a user is never served
something worse, on their own held-out data, than the tenant's *current* prior. A head
promoted against yesterday's prior can lose to today's, and the rebased candidate that
would fix it may be refused for other reasons (the regression set, the history check).
So, after every prior promotion:

1. `stale_heads`: every personal head of the tenant not warm-started from the new prior;
2. `check_heads`: each head and the new prior on the examples the head's gate held out
   (the head never trained on them), the prior attached once for all users, figures
   reused from the evaluator's cache where the gate measured them in this process;
3. `supersede`: a head the prior beats gets a `RevisionSupersededByPrior` event in the
   user's stream, with the figures. The projections then drop the user's head, so the
   user is served the prior until a candidate rebased on it wins its gate.

The rebased candidate's gate (`better_baseline`) compares it with the better of (head,
new prior) on its own held-out examples, regression set included: it must beat what the
user would otherwise be served, not a stale head.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from tessera.events.projections import ProjectionError, RevisionRow
from tessera.schemas.events import INTERACTION_TYPES, PRIOR_USER_ID, EventEnvelope, EventType
from tessera.schemas.revisions import RevisionSupersededByPrior
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.dataset import Example, build_dataset
from tessera.workers.evaluator import heldout_nlls
from tessera.workers.gate import EvalMetrics
from tessera.workers.revision_events import revision_event
from tessera.workers.revision_plan import head_row, rests_on
from tessera.workers.revision_types import RevisionLog, RevisionPlan, RevisionWorker

log = logging.getLogger(__name__)

ACTOR = "gate:prior-refresh"
_INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)
Publish = Callable[[EventEnvelope], None]
Evaluate = Callable[[Path | None, RevisionPlan], EvalMetrics]


@dataclass(frozen=True)
class HeadCheck:
    """One personal head against the new prior on the head's held-out examples."""

    user_id: str
    head_revision_id: str
    head_nll: float
    prior_nll: float
    heldout_positions: tuple[int, ...]

    @property
    def loses(self) -> bool:
        """The prior predicts the user's held-out examples strictly better (NaN: no)."""
        return self.prior_nll < self.head_nll


def stale_heads(store: RevisionLog, tenant_id: str, prior: RevisionRow) -> list[RevisionRow]:
    """The tenant's personal heads that were not warm-started from `prior`."""
    heads = []
    for user in store.list_users(tenant_id):
        if user.user_id == PRIOR_USER_ID:
            continue
        head = head_row(store, tenant_id, user.user_id)
        if head is not None and head.kind == "personal" and not rests_on(store, head, prior):
            heads.append(head)
    return heads


def heldout_of(store: RevisionLog, head: RevisionRow) -> tuple[Example, ...]:
    """The examples `head`'s gate held out, rebuilt from the log exactly as its dataset was
    split (same events, same split), so they digest the same as when the gate measured
    them. Forgotten content is never read."""
    positions = {int(p) for p in head.provenance.get("heldout_positions", [])}
    after = max(head.dataset_from - 1,
                store.last_forgotten_position(head.tenant_id, head.user_id))
    if not positions or after >= head.dataset_to:
        return ()
    events = store.read(after=after, upto=head.dataset_to, tenant_id=head.tenant_id,
                        user_id=head.user_id, event_types=_INTERACTIONS)
    split = build_dataset(events, holdout_k=len(positions), from_position=after,
                          to_position=head.dataset_to)
    return tuple(e for e in split.heldout if e.position in positions)


def check_heads(
    worker: RevisionWorker, prior: RevisionRow, heads: list[RevisionRow]
) -> list[HeadCheck]:
    """Each head's and the prior's mean target NLL on the head's held-out examples.
    Heads with no held-out examples left are not judged (and kept)."""
    sets = [(head, heldout_of(worker.store, head)) for head in heads]
    for head, examples in sets:
        if not examples:
            log.warning("head %s of %s has no held-out examples left: kept unjudged",
                        head.revision_id, head.user_id)
    sets = [(head, examples) for head, examples in sets if examples]
    if not sets:
        return []
    engine, cfg, cache = worker.engine, worker.config, worker.metrics_cache
    prior_nlls = heldout_nlls(
        engine.model, engine.tokenizer, [examples for _, examples in sets],
        adapter=worker.adapters.path(prior.adapter_digest),
        max_length=cfg.eval_max_length, cache=cache,
    )
    checks = []
    for (head, examples), prior_nll in zip(sets, prior_nlls, strict=True):
        (head_nll,) = heldout_nlls(
            engine.model, engine.tokenizer, [examples],
            adapter=worker.adapters.path(head.adapter_digest),
            max_length=cfg.eval_max_length, cache=cache,
        )
        checks.append(HeadCheck(head.user_id, head.revision_id, head_nll, prior_nll,
                                tuple(e.position for e in examples)))
    return checks


def superseded_event(tenant_id: str, prior: RevisionRow, check: HeadCheck) -> EventEnvelope:
    """The audited event that sets `check`'s head aside for `prior` (derived id: the same
    head and prior always give the same event, so a retried sweep appends nothing)."""
    change = (check.prior_nll - check.head_nll) / abs(check.head_nll or 1.0)
    payload = RevisionSupersededByPrior(
        revision_id=check.head_revision_id, prior_revision_id=prior.revision_id,
        head_nll=check.head_nll, prior_nll=check.prior_nll,
        heldout_positions=list(check.heldout_positions), actor=ACTOR,
        reason=(f"tenant prior {prior.revision_id} beats this head on the user's "
                f"{len(check.heldout_positions)} held-out examples: NLL {check.prior_nll:.4f} "
                f"vs {check.head_nll:.4f} ({change:+.2%}); the prior is served until a "
                f"rebased revision wins"),
    )
    return revision_event(EventType.REVISION_SUPERSEDED_BY_PRIOR, payload, tenant_id=tenant_id,
                          user_id=check.user_id,
                          revision_id=f"{check.head_revision_id}@{prior.revision_id}")


def supersede_stale_heads(
    worker: RevisionWorker, tenant_id: str, prior_revision_id: str | None,
    *, publish: Publish | None = None,
) -> list[HeadCheck]:
    """If `prior_revision_id` is the tenant's current prior, check every stale head
    against it and supersede those that lose (appended one user at a time: a head that
    moved meanwhile, e.g. a new promotion, refuses only its own event). Returns the
    checks made. Idempotent: run again after a crash, it appends nothing twice."""
    prior = head_row(worker.store, tenant_id, PRIOR_USER_ID)
    if prior is None or prior.revision_id != prior_revision_id:
        return []
    checks = check_heads(worker, prior, stale_heads(worker.store, tenant_id, prior))
    for check in checks:
        ids = {"tenant_id": tenant_id, "user_id": check.user_id,
               "revision_id": check.head_revision_id}
        if not check.loses:
            log.info("head kept: NLL %.4f vs new prior %.4f", check.head_nll, check.prior_nll,
                     extra=ids)
            continue
        event = superseded_event(tenant_id, prior, check)
        try:
            stored = worker.store.append([event])
        except ProjectionError as exc:
            log.warning("head not superseded (it changed meanwhile): %s", exc, extra=ids)
            continue
        log.info("head superseded by prior %s: NLL %.4f vs %.4f", prior.revision_id,
                 check.head_nll, check.prior_nll, extra=ids)
        if stored and publish is not None:
            publish(event)  # serving re-resolves the user: the prior from now on
    return checks


def better_baseline(
    plan: RevisionPlan, evaluate: Evaluate, adapters: AdapterStore
) -> tuple[RevisionPlan, EvalMetrics, dict[str, float]]:
    """The plan's baseline and its figures; for a rebase (`plan.rival`, the new prior),
    the better of (head, new prior) on the plan's held-out examples, with both NLLs for
    the record. The whole gate (regression set, canaries, history) then compares with
    it: what the user would be served if the candidate lost."""

    def figures(row: RevisionRow | None) -> EvalMetrics:
        return evaluate(adapters.path(row.adapter_digest) if row is not None else None, plan)

    head = figures(plan.baseline)
    if plan.rival is None:
        return plan, head, {}
    rival = figures(plan.rival)
    record = {"head_user_nll": head.user_nll, "prior_user_nll": rival.user_nll}
    if math.isfinite(rival.user_nll) and not rival.user_nll >= head.user_nll:
        return replace(plan, baseline=plan.rival), rival, record
    return plan, head, record
