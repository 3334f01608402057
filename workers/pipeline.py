"""One revision end to end: plan, train, store, record, evaluate, decide, publish.

For a personal request `(tenant, user, up_to_position)`:
1. skip it when a decided revision already covers `up_to_position` (idempotent);
2. parent = the user's promoted head, else the tenant prior's head, else the base model;
3. dataset = the user's interaction events in `(after, up_to_position]`, where `after` is
   the parent's dataset end when the parent is the user's own revision (the parent already
   learned everything before it), else 0 — and never before the user's last forget;
4. train a LoRA warm-started from the parent, put the blob in the content-addressed
   store, append `RevisionTrained` with the full provenance (blob first: a recorded
   revision never names a missing blob);
5. evaluate candidate and baseline (what the user is served now: personal head, else the
   prior, else the base; on a rebase, the better of head and new prior) on the user's
   held-out examples and the shared regression set;
   append `RevisionEvaluated` plus `RevisionPromoted` or `RevisionRejected` in one
   transaction;
6. publish a promotion on `tessera.revisions` keyed `tenant/user`, after the commit.
7. after a tenant prior is promoted, supersede the personal heads that lose to it on
   their held-out examples (workers/stale_heads.py).

Tenant priors (`user_id == PRIOR_USER_ID`) differ only in step 2-3 (workers/prior.py).
This module only orchestrates; each step is its own module: planning
(workers/revision_plan.py, workers/prior.py), training (workers/revision_train.py),
evaluation (workers/revision_eval.py), the gate decision and its record
(workers/revision_decide.py). The shared types live in workers/revision_types.py and are
re-exported here for the pipeline's callers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tessera.events.forget_guard import ForgottenDataRefused
from tessera.events.projections import RevisionRow
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers import metrics, revision_plan, revision_train
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.evaluator import MetricsCache
from tessera.workers.gate import EvalMetrics
from tessera.workers.prior import plan_prior
from tessera.workers.regression_bound import BoundRecord
from tessera.workers.regression_set import RegressionSet, load_regression_set
from tessera.workers.revision_decide import (
    decision_events,
    forgotten_meanwhile,
    gate_decision,
    metrics_dict,
    record_decision,
    recorded_figures,
)
from tessera.workers.revision_eval import PlanEvaluator, measure
from tessera.workers.revision_plan import personal_dataset_params, plan_personal
from tessera.workers.revision_train import train_and_store, trained_event
from tessera.workers.revision_types import (
    DECIDED_STATES,
    INTERACTIONS,
    Engine,
    Outcome,
    PipelineConfig,
    Publish,
    RevisionLog,
    RevisionOutcome,
    RevisionPlan,
    skipped,
)
from tessera.workers.stale_heads import supersede_stale_heads
from tessera.workers.training_request import TrainingRequest

__all__ = [
    "DECIDED_STATES", "INTERACTIONS", "Engine", "Outcome", "PipelineConfig", "Publish",
    "RevisionLog", "RevisionOutcome", "RevisionPipeline", "RevisionPlan", "metrics_dict",
    "personal_dataset_params", "skipped",
]

log = logging.getLogger(__name__)


class RevisionPipeline:
    """Turns training requests into decided revisions. One instance per worker process;
    not thread-safe (it drives one model)."""

    def __init__(
        self,
        store: RevisionLog,
        adapters: AdapterStore,
        engine: Engine,
        config: PipelineConfig,
        *,
        publish: Publish | None = None,
    ) -> None:
        self.store = store
        self.adapters = adapters
        self.engine = engine
        self.config = config
        self._publish = publish
        self._regression: RegressionSet = load_regression_set(config.regression_version)
        self._cache = MetricsCache()
        self._evaluator = PlanEvaluator(engine, config, self._regression, self._cache)

    @property
    def regression(self) -> RegressionSet:
        """The shared regression set every candidate of this worker is gated on."""
        return self._regression

    @property
    def metrics_cache(self) -> MetricsCache:
        """Figures of models that do not change, shared by every check of this worker."""
        return self._cache

    # --- entry point ------------------------------------------------------------------

    def run(self, request: TrainingRequest) -> RevisionOutcome:
        """Handle one request; the outcome is committed in the log when this returns."""
        if request.user_id == PRIOR_USER_ID:
            plan_or_skip = plan_prior(self.store, self.config, request)
        else:
            plan_or_skip = plan_personal(self.store, self.config, request)
        if isinstance(plan_or_skip, RevisionOutcome):
            metrics.record_outcome("skipped")
            log.info("skipped: %s", plan_or_skip.reasons[0], extra=_ids(request))
            self._after_prior(request, plan_or_skip)  # a retry finishes a crashed sweep
            return plan_or_skip
        outcome = self.run_plan(plan_or_skip)
        metrics.record_outcome(outcome.outcome)
        self._after_prior(request, outcome)
        return outcome

    def _after_prior(self, request: TrainingRequest, outcome: RevisionOutcome) -> None:
        """Once a tenant prior is served, heads that lose to it stop being served."""
        if request.user_id == PRIOR_USER_ID and outcome.outcome != "rejected":
            supersede_stale_heads(self, request.tenant_id, outcome.revision_id,
                                  publish=self._publish)

    # --- the planning functions, for callers that hold a pipeline ---------------------

    def already_decided(self, request: TrainingRequest) -> RevisionRow | None:
        """A decided revision of the stream that covers the request's position."""
        return revision_plan.already_decided(self.store, request)

    def head_row(self, tenant_id: str, user_id: str) -> RevisionRow | None:
        return revision_plan.head_row(self.store, tenant_id, user_id)

    def rests_on(self, revision: RevisionRow, prior: RevisionRow) -> bool:
        """Whether `prior` is the tenant-prior ancestor `revision` was warm-started from."""
        return revision_plan.rests_on(self.store, revision, prior)

    def plan_personal(self, request: TrainingRequest) -> RevisionPlan | RevisionOutcome:
        return revision_plan.plan_personal(self.store, self.config, request)

    # --- shared: train, record, evaluate, decide, publish -----------------------------

    def run_plan(self, plan: RevisionPlan) -> RevisionOutcome:
        seconds: dict[str, float] = {"dataset": plan.dataset_seconds}
        recorded = self.recorded_candidate(plan)
        if recorded is not None:
            # A crashed attempt recorded the candidate already: decide it, do not retrain.
            digest, n_bytes = recorded
        else:
            # Through the methods (not the functions): tests replace them on the instance.
            digest, n_bytes, train_s, store_s, bound = train_and_store(
                self.train_candidate, self.adapters, plan, _plan_ids(plan))
            seconds["train"], seconds["store"] = train_s, store_s
            refused = self.record_trained(plan, digest, n_bytes, train_s, bound=bound)
            if refused is not None:
                return refused
        return self.decide(plan, digest, n_bytes, seconds)

    def recorded_candidate(self, plan: RevisionPlan) -> tuple[str, int] | None:
        """(digest, bytes) of the plan's candidate when a crashed attempt recorded it (its
        `RevisionTrained` is in the log and its blob in the store), else None."""
        existing = self.store.get_revision(plan.revision_id)
        if existing is None or not self.adapters.exists(existing.adapter_digest):
            return None
        digest = existing.adapter_digest
        log.info("resuming recorded candidate %s", digest[:12], extra=_plan_ids(plan))
        return digest, self.adapters.path(digest).stat().st_size

    def record_trained(self, plan: RevisionPlan, digest: str, n_bytes: int, train_s: float,
                       *, group: dict[str, Any] | None = None,
                       bound: BoundRecord | None = None) -> RevisionOutcome | None:
        """Append the candidate's `RevisionTrained` (with its group, when trained in one);
        the skipped outcome when the forget guard refuses it (its blob is deleted)."""
        try:
            self.store.append([trained_event(self.engine, self.config, self._regression,
                                             plan, digest, n_bytes, train_s, group=group,
                                             bound=bound)])
        except ForgottenDataRefused as exc:
            return forgotten_meanwhile(self.adapters, plan, digest, str(exc))
        return None

    def decide(self, plan: RevisionPlan, digest: str, n_bytes: int, seconds: dict[str, float],
               *, measured: Mapping[Path | None, EvalMetrics] | None = None) -> RevisionOutcome:
        """Measure the recorded candidate `digest` and its baseline (figures in `measured`,
        by adapter file, are taken as given: a group's, measured together), gate, record
        the decision, publish a promotion."""
        ids = _plan_ids(plan)
        known = measured or {}

        def evaluate_with(adapter: Path | None, of: RevisionPlan) -> EvalMetrics:
            figures = known.get(adapter)
            return figures if figures is not None else self._evaluate(adapter, of)

        started = time.perf_counter()
        figures = measure(plan, digest, evaluate_with=evaluate_with, engine=self.engine,
                          adapters=self.adapters, config=self.config)
        decision = gate_decision(figures, self.config)
        seconds["evaluate"] = time.perf_counter() - started
        metrics.record_stage("evaluate", seconds["evaluate"])

        plan = figures.plan  # on a rebase, its baseline is the better of head and prior
        cand, base = recorded_figures(figures, decision)
        events = decision_events(plan, digest, decision, (cand, base),
                                 self.store.get_head(plan.tenant_id, plan.user_id))
        stored = record_decision(self.store, self.adapters, plan, digest, events)
        if isinstance(stored, RevisionOutcome):
            return stored
        outcome: Outcome = "promoted" if decision.promote else "rejected"
        log.info("%s: %s", outcome, "; ".join(decision.reasons),
                 extra={**ids, "outcome": outcome, "user_nll": figures.candidate.user_nll,
                        "baseline_user_nll": figures.baseline.user_nll})
        if stored and decision.promote and self._publish is not None:
            # Promotions only (the topic carries what serving must act on). Only the worker
            # whose append stored the decision announces it: a duplicate attempt
            # (rebalance, retry) finds it stored already and stays quiet.
            self._publish(events[1])
        baseline_id = plan.baseline.revision_id if plan.baseline is not None else None
        return RevisionOutcome(
            outcome, plan.revision_id, decision.reasons, tenant_id=plan.tenant_id,
            user_id=plan.user_id, adapter_digest=digest, adapter_bytes=n_bytes,
            parent_revision_id=plan.parent.revision_id if plan.parent is not None else None,
            baseline_revision_id=baseline_id, metrics=cand, baseline_metrics=base,
            seconds=seconds,
        )

    def train_candidate(self, plan: RevisionPlan, out_dir: Path | None = None) -> Path:
        """Train the plan's adapter and return the blob file (not stored)."""
        return revision_train.train_candidate(self.engine, self.adapters, self.config, plan,
                                              out_dir, regression=self._regression,
                                              cache=self._cache)

    def _evaluate(self, adapter: Path | None, plan: RevisionPlan) -> EvalMetrics:
        return self._evaluator(adapter, plan)


def _ids(request: TrainingRequest) -> dict[str, str]:
    return {"tenant_id": request.tenant_id, "user_id": request.user_id}


def _plan_ids(plan: RevisionPlan) -> dict[str, str]:
    return {"tenant_id": plan.tenant_id, "user_id": plan.user_id,
            "revision_id": plan.revision_id}
