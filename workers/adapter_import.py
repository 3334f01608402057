"""Imported adapters become candidate revisions, gated like trained ones.

Two steps, so that the HTTP server (no model loaded) can take uploads and the trainer
group does the gating:

1. `stage_import` (anywhere): check a peft adapter against the base model and the
   tenant's LoRA shape (workers/peft_format.py), write it as a blob in the adapter store,
   and return the `TrainingRequest` that carries it (`adapter_import`).
2. `run_import` (a trainer, through `handle_request`): plan the gate's inputs from the
   user's events - held-out examples, earlier held-out history, baseline = what the user
   is served now - append `RevisionTrained` with `hyperparameters.origin`, then let
   `RevisionPipeline.run_plan` evaluate and decide it. `run_plan` finds the candidate
   recorded and resumes at evaluation, exactly as for a crashed training attempt, so an
   import meets the very gate (held-out, regression, canaries, history) a trained
   revision meets.

An imported revision learned nothing of the log: its dataset is empty (`dataset_to` =
`dataset_from - 1`), so the user's next trained revision, warm-started from it, learns
their whole history. Its id derives from (tenant, user, blob): importing the same file
again is a no-op.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Final

from tessera.events.forget_guard import ForgottenDataRefused
from tessera.schemas.events import PRIOR_USER_ID, EventEnvelope, EventType
from tessera.schemas.revisions import RevisionTrained
from tessera.workers import metrics
from tessera.workers.adapter_store import AdapterStore, load_adapter_blob
from tessera.workers.base_model import BaseModelInfo
from tessera.workers.dataset import build_dataset
from tessera.workers.history_gate import history_examples
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.peft_format import (
    ImportTarget,
    PeftAdapter,
    PeftFormatError,
    check_fits,
    linear_shapes,
    to_blob,
)
from tessera.workers.pipeline import (
    DECIDED_STATES,
    INTERACTIONS,
    RevisionOutcome,
    RevisionPipeline,
    RevisionPlan,
    skipped,
)
from tessera.workers.revision_events import code_version, revision_event
from tessera.workers.training_request import AdapterImport, TrainingRequest

EMPTY_DATASET_DIGEST: Final = hashlib.sha256(b"").hexdigest()


def import_revision_id(tenant_id: str, user_id: str, adapter_digest: str) -> str:
    """The one revision id an import of this blob for this user can have."""
    digest = hashlib.sha256(f"{tenant_id}/{user_id}/{adapter_digest}".encode()).hexdigest()
    return f"imp-{digest[:20]}"


def import_target(base: BaseModelInfo, config: LoraTrainConfig) -> ImportTarget:
    """What an import must fit: this base model and the tenant's personal LoRA shape
    (the user's next revisions are warm-started from it)."""
    return ImportTarget(
        base_model_id=base.model_id, base_digest=base.digest, rank=config.rank,
        alpha=config.alpha, target_modules=config.target_modules,
        linear_shapes=linear_shapes(base.path),
    )


def stage_import(
    adapter: PeftAdapter,
    target: ImportTarget,
    adapters: AdapterStore,
    *,
    tenant_id: str,
    user_id: str,
    up_to_position: int,
    source: str,
    actor: str,
) -> TrainingRequest:
    """Check `adapter` (PeftFormatError says why it does not fit), store it as a blob and
    return the request that has a trainer gate it on the user's events so far."""
    if user_id == PRIOR_USER_ID:
        raise PeftFormatError("an adapter is imported for a user, not as the tenant prior")
    check_fits(adapter, target)
    origin = {"kind": "import", "sha256": adapter.sha256, "tenant_id": tenant_id,
              "user_id": user_id}
    with tempfile.TemporaryDirectory(prefix="tessera-import-") as tmp:
        blob = Path(tmp) / "adapter.safetensors"
        to_blob(adapter, target, blob, origin=origin)
        digest = adapters.put_file(blob)
    ref = AdapterImport(adapter_digest=digest, source_sha256=adapter.sha256, source=source,
                        actor=actor)
    return TrainingRequest(tenant_id=tenant_id, user_id=user_id, up_to_position=up_to_position,
                           trigger="import", adapter_import=ref)


def handle_request(pipeline: RevisionPipeline, request: TrainingRequest) -> RevisionOutcome:
    """What a trainer does with any request: gate an import, else train a revision."""
    if request.adapter_import is None:
        return pipeline.run(request)
    outcome = run_import(pipeline, request)
    metrics.record_outcome(outcome.outcome)
    return outcome


def run_import(pipeline: RevisionPipeline, request: TrainingRequest) -> RevisionOutcome:
    """Record the imported candidate and have the gate decide it (see module docstring)."""
    ref = request.adapter_import
    if ref is None:
        raise ValueError("run_import needs a request with adapter_import")
    t, u = request.tenant_id, request.user_id
    rid = import_revision_id(t, u, ref.adapter_digest)
    existing = pipeline.store.get_revision(rid)
    if existing is not None and existing.state in DECIDED_STATES:
        return skipped(request, f"this adapter was imported already as {rid} ({existing.state})",
                       rid)
    problem = _blob_problem(pipeline, ref)
    if problem is not None:
        return skipped(request, problem)
    plan = plan_import(pipeline, request, rid)
    if isinstance(plan, RevisionOutcome):
        return _discarded(pipeline, ref, plan, recorded=existing is not None)
    if existing is None:
        try:
            pipeline.store.append([_trained_event(pipeline, plan, ref)])
        except ForgottenDataRefused as exc:
            return _discarded(pipeline, ref, skipped(request, str(exc)), recorded=False)
    return pipeline.run_plan(plan)


def _discarded(pipeline: RevisionPipeline, ref: AdapterImport, outcome: RevisionOutcome,
               *, recorded: bool) -> RevisionOutcome:
    """An import that will not be gated leaves no blob behind (it was staged for this
    user alone, see `to_blob`), e.g. when the user was forgotten since the upload."""
    if not recorded:
        pipeline.adapters.delete(ref.adapter_digest)
    return outcome


def _blob_problem(pipeline: RevisionPipeline, ref: AdapterImport) -> str | None:
    """Why the staged blob cannot be gated here (settings changed since it was staged)."""
    if not pipeline.adapters.exists(ref.adapter_digest):
        return f"imported adapter {ref.adapter_digest[:12]} is not in the adapter store"
    _, cfg = load_adapter_blob(pipeline.adapters.path(ref.adapter_digest))
    want = pipeline.config.personal_train
    if cfg.base_digest != pipeline.engine.base.digest:
        return (f"imported adapter was staged for base {cfg.base_digest[:12]}, this trainer "
                f"runs {pipeline.engine.base.digest[:12]}")
    if (cfg.r, cfg.lora_alpha, tuple(cfg.target_modules)) != (
        want.rank, want.alpha, want.target_modules
    ):
        return (f"imported adapter has r={cfg.r} alpha={cfg.lora_alpha} targets="
                f"{list(cfg.target_modules)}; personal revisions here are r={want.rank} "
                f"alpha={want.alpha} targets={list(want.target_modules)}")
    return None


def plan_import(
    pipeline: RevisionPipeline, request: TrainingRequest, revision_id: str
) -> RevisionPlan | RevisionOutcome:
    """The gate's inputs: the user's held-out examples among their events (since their
    last forget) up to the request's position, and what they are served now."""
    store, config = pipeline.store, pipeline.config
    t, u, upto = request.tenant_id, request.user_id, request.up_to_position
    after = store.last_forgotten_position(t, u)
    if after >= upto:
        return skipped(request, f"{t}/{u} has no events to judge an imported adapter on")
    events = store.read(after=after, upto=upto, tenant_id=t, user_id=u,
                        event_types=INTERACTIONS)
    split = build_dataset(events, holdout_k=config.holdout_k, from_position=after,
                          to_position=upto)
    if not split.heldout:
        return skipped(request, f"{t}/{u} has no held-out examples to judge an imported "
                                "adapter on")
    baseline = pipeline.head_row(t, u) or pipeline.head_row(t, PRIOR_USER_ID)
    first_heldout = min(e.position for e in split.heldout)
    return RevisionPlan(
        tenant_id=t, user_id=u, kind="personal", revision_id=revision_id,
        up_to_position=upto, trigger="import", parent=None, baseline=baseline,
        dataset_from=after + 1, dataset_to=after, dataset_digest=EMPTY_DATASET_DIGEST,
        train=(), heldout=split.heldout,
        dataset_params={"builder": "import", "user_id": u, "after": after, "to": upto,
                        "holdout_k": split.holdout_k, "heldout_examples": len(split.heldout),
                        "split_digest": split.digest},
        # earlier held-out examples, kept apart from this gate's own held-out ones
        history=history_examples(store, t, u, before=first_heldout - 1,
                                 limit=config.history_max),
    )


def _trained_event(
    pipeline: RevisionPipeline, plan: RevisionPlan, ref: AdapterImport
) -> EventEnvelope:
    cfg = pipeline.config.personal_train
    base = pipeline.engine.base
    payload = RevisionTrained(
        revision_id=plan.revision_id, kind="personal", parent_revision_id=None,
        base_model_id=base.model_id, base_digest=base.digest,
        adapter_digest=ref.adapter_digest,
        adapter_bytes=pipeline.adapters.path(ref.adapter_digest).stat().st_size,
        rank=cfg.rank, alpha=cfg.alpha, target_modules=list(cfg.target_modules),
        hyperparameters={
            "origin": {"kind": "import", "sha256": ref.source_sha256, "source": ref.source,
                       "actor": ref.actor},
            "dataset": plan.dataset_params,
            "gate": pipeline.config.gate.as_provenance(),
            "regression_set": {"version": pipeline.config.regression_version},
        },
        seed=0, dataset_from=plan.dataset_from, dataset_to=plan.dataset_to,
        dataset_digest=plan.dataset_digest,
        heldout_positions=[e.position for e in plan.heldout],
        code_version=code_version(), trigger="import", train_seconds=0.0,
    )
    return revision_event(EventType.REVISION_TRAINED, payload, tenant_id=plan.tenant_id,
                          user_id=plan.user_id, revision_id=plan.revision_id)
