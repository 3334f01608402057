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

Tenant priors (`user_id == PRIOR_USER_ID`) differ only in step 2-3 (see workers/prior.py);
steps 4-6 are shared (`RevisionPipeline.run_plan`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from tessera.events.forget_guard import ForgottenDataRefused
from tessera.events.projections import HeadRow, ProjectionError, RevisionRow, UserRow
from tessera.events.store import StoredEvent
from tessera.schemas.events import (
    INTERACTION_TYPES,
    PRIOR_USER_ID,
    EventEnvelope,
    EventType,
    RevisionState,
)
from tessera.schemas.revisions import (
    RevisionEvaluated,
    RevisionPromoted,
    RevisionRejected,
    RevisionTrained,
)
from tessera.workers import metrics
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.base_model import BaseModelInfo
from tessera.workers.dataset import DatasetSplit, Example, build_dataset
from tessera.workers.evaluator import MetricsCache, evaluate
from tessera.workers.gate import EvalMetrics, GateConfig, GateDecision, decide
from tessera.workers.history_gate import history_check, history_examples, with_history
from tessera.workers.lora_config import SHAPE_FIELDS, LoraTrainConfig
from tessera.workers.regression_set import RegressionSet, load_regression_set
from tessera.workers.revision_events import code_version, revision_event, revision_id_for
from tessera.workers.stale_heads import better_baseline, supersede_stale_heads
from tessera.workers.training_request import TrainingRequest

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)
DECIDED_STATES = frozenset({"promoted", "rejected", "superseded", "rolled_back", "forgotten"})
Outcome = Literal["promoted", "rejected", "skipped"]
Publish = Callable[[EventEnvelope], None]


class RevisionLog(Protocol):
    """What the pipeline needs from the event store (both stores provide it)."""

    def append(self, events: Sequence[EventEnvelope]) -> list[StoredEvent]: ...

    def read(
        self,
        *,
        after: int = 0,
        upto: int | None = None,
        tenant_id: str | None = None,
        user_id: str | None = None,
        event_types: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]: ...

    def get_head(self, tenant_id: str, user_id: str) -> HeadRow | None: ...

    def get_revision(self, revision_id: str) -> RevisionRow | None: ...

    def list_revisions(self, tenant_id: str, user_id: str) -> list[RevisionRow]: ...

    def list_users(self, tenant_id: str) -> list[UserRow]: ...

    def last_forgotten_position(self, tenant_id: str, user_id: str) -> int: ...


@dataclass(frozen=True)
class PipelineConfig:
    train: LoraTrainConfig = field(default_factory=LoraTrainConfig)  # the tenant prior's
    # Applied on top of `train` for personal revisions (`personal_train`); shape fields
    # (rank, alpha, targets) may not differ: a personal chain warm-starts from the prior.
    # Empty here (library callers and tests: personal = prior config); the service ships
    # `lora_config.PERSONAL_DEFAULTS` through `TESSERA_PERSONAL_TRAIN_OVERRIDES`.
    personal_overrides: dict[str, Any] = field(default_factory=dict)
    gate: GateConfig = field(default_factory=GateConfig)
    seed: int = 1234
    holdout_k: int = 8
    min_train_examples: int = 8
    prior_max_events_per_user: int = 200
    prior_max_events: int = 4000
    prior_eval_users: int = 8
    regression_version: str = "regression-v1"
    eval_max_length: int = 256
    canaries: bool = True
    progress: bool = False  # tqdm bar during training (CLI)
    history_max: int = 32  # earlier held-out examples a candidate must not get worse on
    history_tolerance: float = 0.01  # relative NLL rise allowed on them

    def __post_init__(self) -> None:
        shape = sorted(set(self.personal_overrides) & set(SHAPE_FIELDS))
        if shape:
            raise ValueError(
                f"personal training overrides may not change {', '.join(shape)}: a personal "
                f"revision is warm-started from the tenant prior and must keep its shape")
        _ = self.personal_train  # validate the overrides now, not at the first personal night

    @property
    def personal_train(self) -> LoraTrainConfig:
        """How personal revisions are trained: `train` with `personal_overrides`."""
        return self.train.with_overrides(self.personal_overrides)

    def train_config(self, kind: Literal["personal", "prior"]) -> LoraTrainConfig:
        """The training config of a revision of `kind`."""
        return self.personal_train if kind == "personal" else self.train


@dataclass
class Engine:
    """The loaded, frozen base model a worker keeps for all its revisions."""

    base: BaseModelInfo
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase


@dataclass(frozen=True)
class RevisionPlan:
    """Everything that determines a candidate: what to train on, from what, for whom."""

    tenant_id: str
    user_id: str
    kind: Literal["personal", "prior"]
    revision_id: str
    up_to_position: int
    trigger: str
    parent: RevisionRow | None  # warm start (None: from the base model)
    baseline: RevisionRow | None  # what the user/tenant is served now (None: base model)
    dataset_from: int  # first position the dataset may contain (after + 1)
    dataset_to: int
    dataset_digest: str
    train: tuple[Example, ...]
    heldout: tuple[Example, ...]
    dataset_params: dict[str, Any]  # how to rebuild the dataset from the log
    history: tuple[Example, ...] = ()  # the user's earlier held-out examples (gate only)
    # A rebase: the new prior, gated against too (the better of it and `baseline` wins).
    rival: RevisionRow | None = None
    dataset_seconds: float = 0.0  # time spent reading events and building the dataset


@dataclass(frozen=True)
class RevisionOutcome:
    outcome: Outcome
    revision_id: str | None
    reasons: list[str]
    tenant_id: str = ""
    user_id: str = ""
    adapter_digest: str | None = None
    adapter_bytes: int = 0
    parent_revision_id: str | None = None
    baseline_revision_id: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline_metrics: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # dataset/train/evaluate/store


def skipped(
    request: TrainingRequest, reason: str, revision_id: str | None = None
) -> RevisionOutcome:
    """An outcome that records nothing: the request needs no new revision."""
    return RevisionOutcome(
        "skipped", revision_id, [reason], tenant_id=request.tenant_id, user_id=request.user_id
    )


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

    @property
    def metrics_cache(self) -> MetricsCache:
        """Figures of models that do not change, shared by every check of this worker."""
        return self._cache

    # --- entry point ------------------------------------------------------------------

    def run(self, request: TrainingRequest) -> RevisionOutcome:
        """Handle one request; the outcome is committed in the log when this returns."""
        if request.user_id == PRIOR_USER_ID:
            from tessera.workers.prior import plan_prior

            plan_or_skip = plan_prior(self, request)
        else:
            plan_or_skip = self.plan_personal(request)
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

    def already_decided(self, request: TrainingRequest) -> RevisionRow | None:
        """A decided revision of the stream that covers the request's position."""
        for row in self.store.list_revisions(request.tenant_id, request.user_id):
            if row.dataset_to >= request.up_to_position and row.state in DECIDED_STATES:
                return row
        return None

    def head_row(self, tenant_id: str, user_id: str) -> RevisionRow | None:
        head = self.store.get_head(tenant_id, user_id)
        return self.store.get_revision(head.revision_id) if head is not None else None

    def rests_on(self, revision: RevisionRow, prior: RevisionRow) -> bool:
        """Whether `prior` is the tenant-prior ancestor `revision` was warm-started from."""
        current: RevisionRow | None = revision
        seen: set[str] = set()
        while current is not None and current.revision_id not in seen:
            if current.revision_id == prior.revision_id:
                return True
            if current.user_id == PRIOR_USER_ID:
                return False  # reached an older prior
            seen.add(current.revision_id)
            parent_id = current.parent_revision_id
            current = self.store.get_revision(parent_id) if parent_id else None
        # A chain trained from the base model alone (no prior then): rebase on the prior.
        return False

    # --- planning a personal revision -------------------------------------------------

    def plan_personal(self, request: TrainingRequest) -> RevisionPlan | RevisionOutcome:
        t, u, upto = request.tenant_id, request.user_id, request.up_to_position
        done = self.already_decided(request)
        if done is not None:
            return skipped(request, f"revision {done.revision_id} ({done.state}) covers "
                                    f"position {upto} already", done.revision_id)
        started = time.perf_counter()
        personal = self.head_row(t, u)
        prior = self.head_row(t, PRIOR_USER_ID)
        parent = personal or prior
        rival: RevisionRow | None = None
        after = personal.dataset_to if personal is not None else 0
        if personal is not None and prior is not None and not self.rests_on(personal, prior):
            # The tenant prior was refreshed since this user's chain started from it:
            # rebase on the new prior and learn the user's whole history again, or the
            # user would never benefit from it. The gate compares with the better of
            # the head and the new prior (stale_heads.better_baseline).
            parent, after, rival = prior, 0, prior
        after = max(after, self.store.last_forgotten_position(t, u))
        if after >= upto:
            return skipped(request, f"nothing new: data up to {after} is learned already")
        events = self.store.read(
            after=after, upto=upto, tenant_id=t, user_id=u, event_types=INTERACTIONS
        )
        split = build_dataset(
            events, holdout_k=self.config.holdout_k, from_position=after, to_position=upto
        )
        if len(split.train) < self.config.min_train_examples:
            return skipped(request, f"{len(split.train)} training examples in ({after}, {upto}] "
                                    f"< {self.config.min_train_examples}")
        history = history_examples(self.store, t, u, before=after, limit=self.config.history_max)
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

    # --- shared: train, record, evaluate, decide, publish -----------------------------

    def run_plan(self, plan: RevisionPlan) -> RevisionOutcome:
        ids = {"tenant_id": plan.tenant_id, "user_id": plan.user_id,
               "revision_id": plan.revision_id}
        seconds: dict[str, float] = {"dataset": plan.dataset_seconds}
        existing = self.store.get_revision(plan.revision_id)
        if existing is not None and self.adapters.exists(existing.adapter_digest):
            # A crashed attempt recorded the candidate already: decide it, do not retrain.
            digest, n_bytes = existing.adapter_digest, self.adapters.path(
                existing.adapter_digest).stat().st_size
            log.info("resuming recorded candidate %s", digest[:12], extra=ids)
        else:
            digest, n_bytes, train_s, store_s = self._train_and_store(plan, ids)
            seconds["train"], seconds["store"] = train_s, store_s
            try:
                self._append([self._trained_event(plan, digest, n_bytes, train_s)])
            except ForgottenDataRefused as exc:
                return self._forgotten_meanwhile(plan, digest, str(exc))

        started = time.perf_counter()
        candidate = self._evaluate(self.adapters.path(digest), plan)
        plan, base_metrics, rivals = better_baseline(plan, self._evaluate, self.adapters)
        baseline_path = (self.adapters.path(plan.baseline.adapter_digest)
                         if plan.baseline is not None else None)
        decision = decide(candidate, base_metrics, self.config.gate)
        history = history_check(self.engine, plan.history, self.adapters.path(digest),
                                baseline_path, max_length=self.config.eval_max_length)
        if history is not None:
            decision = with_history(decision, history, self.config.history_tolerance)
        seconds["evaluate"] = time.perf_counter() - started
        metrics.record_stage("evaluate", seconds["evaluate"])

        cand = metrics_dict(candidate, decision)
        base = {**metrics_dict(base_metrics), **rivals}
        if history is not None:
            cand["history_nll"], base["history_nll"] = history.candidate_nll, history.baseline_nll
            cand["history_examples"] = base["history_examples"] = float(history.examples)
        baseline_id = plan.baseline.revision_id if plan.baseline is not None else None
        evaluated = RevisionEvaluated(revision_id=plan.revision_id, metrics=cand,
                                      baseline_revision_id=baseline_id, baseline_metrics=base)
        previous = self.store.get_head(plan.tenant_id, plan.user_id)
        verdict: RevisionPromoted | RevisionRejected
        if decision.promote:
            verdict = RevisionPromoted(
                revision_id=plan.revision_id, adapter_digest=digest, reasons=decision.reasons,
                previous_revision_id=previous.revision_id if previous is not None else None,
            )
        else:
            verdict = RevisionRejected(revision_id=plan.revision_id, reasons=decision.reasons)
        kind = EventType.REVISION_PROMOTED if decision.promote else EventType.REVISION_REJECTED
        decision_event = self._event(kind, verdict, plan)
        try:
            stored = self._append([self._event(EventType.REVISION_EVALUATED, evaluated, plan),
                                   decision_event])
        except ProjectionError as exc:
            row = self.store.get_revision(plan.revision_id)
            if row is None or row.state != RevisionState.FORGOTTEN:
                raise
            return self._forgotten_meanwhile(plan, digest, str(exc))
        outcome: Outcome = "promoted" if decision.promote else "rejected"
        log.info("%s: %s", outcome, "; ".join(decision.reasons),
                 extra={**ids, "outcome": outcome, "user_nll": candidate.user_nll,
                        "baseline_user_nll": base_metrics.user_nll})
        if stored and decision.promote and self._publish is not None:
            # Promotions only (the topic carries what serving must act on). Only the worker
            # whose append stored the decision announces it: a duplicate attempt
            # (rebalance, retry) finds it stored already and stays quiet.
            self._publish(decision_event)
        return RevisionOutcome(
            outcome, plan.revision_id, decision.reasons, tenant_id=plan.tenant_id,
            user_id=plan.user_id, adapter_digest=digest, adapter_bytes=n_bytes,
            parent_revision_id=plan.parent.revision_id if plan.parent is not None else None,
            baseline_revision_id=baseline_id, metrics=cand, baseline_metrics=base,
            seconds=seconds,
        )

    def _forgotten_meanwhile(self, plan: RevisionPlan, digest: str, why: str) -> RevisionOutcome:
        """A forget overtook this revision's training: the log refused it (or has it as
        forgotten), so nothing serves it; its blob holds what was forgotten and goes too.
        (A blob is content-addressed, but no other revision can be trained to the same
        bytes without the same erased data.)"""
        self.adapters.delete(digest)
        log.warning("refused and its adapter deleted: %s", why,
                    extra={"tenant_id": plan.tenant_id, "user_id": plan.user_id,
                           "revision_id": plan.revision_id})
        return RevisionOutcome("skipped", None, [why], tenant_id=plan.tenant_id,
                               user_id=plan.user_id)

    def train_candidate(self, plan: RevisionPlan, out_dir: Path | None = None) -> Path:
        """Train the plan's adapter and return the blob file (not stored)."""
        from tessera.workers.trainer import train_adapter

        init = (self.adapters.path(plan.parent.adapter_digest)
                if plan.parent is not None else None)
        result = train_adapter(
            self.engine.model, self.engine.tokenizer, plan.train,
            config=self.config.train_config(plan.kind),
            base_digest=self.engine.base.digest, init_adapter=init, seed=self.config.seed,
            out_dir=out_dir, progress=self.config.progress,
        )
        blob: Path = result.blob_path
        return blob

    def _train_and_store(
        self, plan: RevisionPlan, ids: dict[str, str]
    ) -> tuple[str, int, float, float]:
        import shutil

        log.info("training started on %d examples (parent %s)", len(plan.train),
                 plan.parent.revision_id if plan.parent else "base", extra=ids)
        started = time.perf_counter()
        blob = self.train_candidate(plan)
        train_s = time.perf_counter() - started
        metrics.record_stage("train", train_s)
        started = time.perf_counter()
        try:
            digest = self.adapters.put_file(blob)
        finally:
            shutil.rmtree(blob.parent, ignore_errors=True)
        store_s = time.perf_counter() - started
        metrics.record_stage("store", store_s)
        n_bytes = self.adapters.path(digest).stat().st_size
        log.info("trained %s (%d bytes) in %.1fs", digest[:12], n_bytes, train_s, extra=ids)
        return digest, n_bytes, train_s, store_s

    def _evaluate(self, adapter: Path | None, plan: RevisionPlan) -> EvalMetrics:
        return evaluate(
            self.engine.model, self.engine.tokenizer, adapter=adapter, heldout=plan.heldout,
            regression=self._regression, max_length=self.config.eval_max_length,
            canaries=self.config.canaries, cache=self._cache,
        )

    def _trained_event(
        self, plan: RevisionPlan, digest: str, n_bytes: int, train_s: float
    ) -> EventEnvelope:
        import torch

        cfg = self.config.train_config(plan.kind)
        payload = RevisionTrained(
            revision_id=plan.revision_id, kind=plan.kind,
            parent_revision_id=plan.parent.revision_id if plan.parent is not None else None,
            base_model_id=self.engine.base.model_id, base_digest=self.engine.base.digest,
            adapter_digest=digest, adapter_bytes=n_bytes, rank=cfg.rank, alpha=cfg.alpha,
            target_modules=list(cfg.target_modules),
            hyperparameters={
                "train": cfg.model_dump(mode="json"),
                # Which config that is (prior: `train`; personal: with the overrides).
                "train_config": plan.kind,
                "personal_overrides": (dict(self.config.personal_overrides)
                                       if plan.kind == "personal" else {}),
                "gate": self.config.gate.as_provenance(),
                "dataset": plan.dataset_params,
                "regression_set": {"version": self._regression.version,
                                   "digest": self._regression.digest},
                # CPU kernels reduce in thread-count-dependent order: re-train with this.
                "torch_threads": torch.get_num_threads(),
                "torch_version": torch.__version__,
                "parent_adapter_digest": (plan.parent.adapter_digest
                                          if plan.parent is not None else None),
            },
            seed=self.config.seed, dataset_from=plan.dataset_from, dataset_to=plan.dataset_to,
            dataset_digest=plan.dataset_digest,
            heldout_positions=[e.position for e in plan.heldout],
            code_version=code_version(), trigger=plan.trigger, train_seconds=round(train_s, 3),
        )
        return self._event(EventType.REVISION_TRAINED, payload, plan)

    def _event(self, kind: EventType, payload: Any, plan: RevisionPlan) -> EventEnvelope:
        return revision_event(kind, payload, tenant_id=plan.tenant_id, user_id=plan.user_id,
                              revision_id=plan.revision_id)

    def _append(self, events: list[EventEnvelope]) -> list[StoredEvent]:
        return self.store.append(events)


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


def _ids(request: TrainingRequest) -> dict[str, str]:
    return {"tenant_id": request.tenant_id, "user_id": request.user_id}
