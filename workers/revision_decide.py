"""The gate's decision on a measured candidate, recorded and announced.

`RevisionEvaluated` and the verdict (`RevisionPromoted` | `RevisionRejected`) are
appended in one transaction; a promotion is published after the commit, by the worker
whose append stored it.
"""

from __future__ import annotations

import logging

from tessera.events.projections import HeadRow, ProjectionError
from tessera.events.store import StoredEvent
from tessera.schemas.events import EventEnvelope, EventType, RevisionState
from tessera.schemas.revisions import RevisionEvaluated, RevisionPromoted, RevisionRejected
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.gate import EvalMetrics, GateDecision, decide
from tessera.workers.history_gate import with_history
from tessera.workers.revision_eval import Figures
from tessera.workers.revision_events import revision_event
from tessera.workers.revision_types import (
    PipelineConfig,
    RevisionLog,
    RevisionOutcome,
    RevisionPlan,
)

log = logging.getLogger(__name__)


def metrics_dict(m: EvalMetrics, decision: GateDecision | None = None) -> dict[str, float]:
    """The numeric gate figures as recorded in `RevisionEvaluated`."""
    out = {
        "user_nll": m.user_nll,
        "regression_nll": m.regression_nll,
        "adapter_norm": m.adapter_norm,
        "heldout_examples": float(m.heldout_examples),
        "canary_failures": float(len(m.canary_failures)),
    }
    if decision is not None:
        out["user_gain"] = decision.user_gain
        out["regression_change"] = decision.regression_change
    return out


def gate_decision(figures: Figures, config: PipelineConfig) -> GateDecision:
    """Promote or reject: the gate on the figures, then the history check."""
    decision = decide(figures.candidate, figures.baseline, config.gate)
    if figures.history is not None:
        decision = with_history(decision, figures.history, config.history_tolerance)
    return decision


def recorded_figures(
    figures: Figures, decision: GateDecision
) -> tuple[dict[str, float], dict[str, float]]:
    """(candidate, baseline) figures as `RevisionEvaluated` records them."""
    cand = metrics_dict(figures.candidate, decision)
    base = {**metrics_dict(figures.baseline), **figures.rivals}
    history = figures.history
    if history is not None:
        cand["history_nll"], base["history_nll"] = history.candidate_nll, history.baseline_nll
        cand["history_examples"] = base["history_examples"] = float(history.examples)
    return cand, base


def decision_events(
    plan: RevisionPlan, digest: str, decision: GateDecision, figures: tuple[dict[str, float],
                                                                          dict[str, float]],
    previous: HeadRow | None,
) -> tuple[EventEnvelope, EventEnvelope]:
    """(`RevisionEvaluated`, the verdict) for `plan` (its baseline: the one compared with)."""
    cand, base = figures
    baseline_id = plan.baseline.revision_id if plan.baseline is not None else None
    evaluated = RevisionEvaluated(revision_id=plan.revision_id, metrics=cand,
                                  baseline_revision_id=baseline_id, baseline_metrics=base)
    verdict: RevisionPromoted | RevisionRejected
    if decision.promote:
        verdict = RevisionPromoted(
            revision_id=plan.revision_id, adapter_digest=digest, reasons=decision.reasons,
            previous_revision_id=previous.revision_id if previous is not None else None,
        )
    else:
        verdict = RevisionRejected(revision_id=plan.revision_id, reasons=decision.reasons)
    kind = EventType.REVISION_PROMOTED if decision.promote else EventType.REVISION_REJECTED
    return (_event(EventType.REVISION_EVALUATED, evaluated, plan), _event(kind, verdict, plan))


def record_decision(
    store: RevisionLog, adapters: AdapterStore, plan: RevisionPlan, digest: str,
    events: tuple[EventEnvelope, EventEnvelope],
) -> list[StoredEvent] | RevisionOutcome:
    """Append the evaluation and verdict; a forget that overtook the revision (the log has
    it as forgotten and refuses the decision) gives the skipped outcome instead."""
    try:
        return store.append(list(events))
    except ProjectionError as exc:
        row = store.get_revision(plan.revision_id)
        if row is None or row.state != RevisionState.FORGOTTEN:
            raise
        return forgotten_meanwhile(adapters, plan, digest, str(exc))


def forgotten_meanwhile(
    adapters: AdapterStore, plan: RevisionPlan, digest: str, why: str
) -> RevisionOutcome:
    """A forget overtook this revision's training: the log refused it (or has it as
    forgotten), so nothing serves it; its blob holds what was forgotten and goes too.
    (A blob is content-addressed, but no other revision can be trained to the same
    bytes without the same erased data.)"""
    adapters.delete(digest)
    log.warning("refused and its adapter deleted: %s", why,
                extra={"tenant_id": plan.tenant_id, "user_id": plan.user_id,
                       "revision_id": plan.revision_id})
    return RevisionOutcome("skipped", None, [why], tenant_id=plan.tenant_id,
                           user_id=plan.user_id)


def _event(kind: EventType, payload: RevisionEvaluated | RevisionPromoted | RevisionRejected,
           plan: RevisionPlan) -> EventEnvelope:
    return revision_event(kind, payload, tenant_id=plan.tenant_id, user_id=plan.user_id,
                          revision_id=plan.revision_id)
