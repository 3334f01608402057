"""Training a planned revision: the candidate adapter, its blob, its provenance event."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.schemas.events import EventEnvelope, EventType
from tessera.schemas.revisions import RevisionTrained
from tessera.workers import metrics
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.evaluator import MetricsCache
from tessera.workers.regression_bound import BoundRecord, bound_record, bounded_blob
from tessera.workers.regression_set import RegressionSet, load_regression_set
from tessera.workers.revision_events import code_version, revision_event
from tessera.workers.revision_types import Engine, PipelineConfig, RevisionPlan
from tessera.workers.trainer import train_adapter

log = logging.getLogger(__name__)

TrainCandidate = Callable[[RevisionPlan], Path]


def rebase_head(adapters: AdapterStore, plan: RevisionPlan) -> tuple[str, Path] | None:
    """On a rebase, the user's head (digest, blob): the gate may compare the candidate with
    it rather than with the new prior it was warm-started from, so the regression bound
    holds against both (workers/regression_bound.py). None otherwise."""
    head = plan.baseline
    if plan.rival is None or head is None or plan.parent is None:
        return None
    if head.adapter_digest == plan.parent.adapter_digest:
        return None
    return head.adapter_digest, adapters.path(head.adapter_digest)


def train_candidate(
    engine: Engine, adapters: AdapterStore, config: PipelineConfig, plan: RevisionPlan,
    out_dir: Path | None = None, *, regression: RegressionSet | None = None,
    cache: MetricsCache | None = None,
) -> Path:
    """Train the plan's adapter, warm-started from its parent, and return the blob file
    (not stored); within the config's regression bound, if it has one."""
    init = adapters.path(plan.parent.adapter_digest) if plan.parent is not None else None
    cfg = config.train_config(plan.kind)
    result = train_adapter(
        engine.model, engine.tokenizer, plan.train, config=cfg,
        base_digest=engine.base.digest, init_adapter=init, seed=config.seed,
        out_dir=out_dir, progress=config.progress,
    )
    return bounded_blob(
        engine.model, engine.tokenizer, result.blob_path, init,
        max_rise=cfg.max_regression_rise, stretch=cfg.step_stretch,
        regression=regression or load_regression_set(config.regression_version),
        max_length=config.eval_max_length, cache=cache, also_within=rebase_head(adapters, plan),
    )


def train_and_store(
    train: TrainCandidate, adapters: AdapterStore, plan: RevisionPlan, ids: dict[str, str]
) -> tuple[str, int, float, float, BoundRecord | None]:
    """Train with `train`, put the blob in the content-addressed store (its temp folder
    goes either way). Returns (digest, bytes, train seconds, store seconds, the regression
    bound's record or None)."""
    log.info("training started on %d examples (parent %s)", len(plan.train),
             plan.parent.revision_id if plan.parent else "base", extra=ids)
    started = time.perf_counter()
    blob = train(plan)
    train_s = time.perf_counter() - started
    metrics.record_stage("train", train_s)
    started = time.perf_counter()
    try:
        bound = bound_record(blob)
        digest = adapters.put_file(blob)
    finally:
        shutil.rmtree(blob.parent, ignore_errors=True)
    store_s = time.perf_counter() - started
    metrics.record_stage("store", store_s)
    n_bytes = adapters.path(digest).stat().st_size
    log.info("trained %s (%d bytes) in %.1fs", digest[:12], n_bytes, train_s, extra=ids)
    return digest, n_bytes, train_s, store_s, bound


def trained_event(
    engine: Engine, config: PipelineConfig, regression: RegressionSet, plan: RevisionPlan,
    digest: str, n_bytes: int, train_s: float, *, group: dict[str, Any] | None = None,
    bound: BoundRecord | None = None,
) -> EventEnvelope:
    """`RevisionTrained` with the full provenance: enough to train the same bytes again
    (for a revision trained in a group, `group` names the group and every member's
    inputs: re-training the group gives the same bytes, workers/reproduce.py)."""
    import torch  # heavy: importers of the pipeline without a model never load it

    cfg = config.train_config(plan.kind)
    payload = RevisionTrained(
        revision_id=plan.revision_id, kind=plan.kind,
        parent_revision_id=plan.parent.revision_id if plan.parent is not None else None,
        base_model_id=engine.base.model_id, base_digest=engine.base.digest,
        adapter_digest=digest, adapter_bytes=n_bytes, rank=cfg.rank, alpha=cfg.alpha,
        target_modules=list(cfg.target_modules),
        hyperparameters={
            "train": cfg.model_dump(mode="json"),
            # Which config that is (prior: `train`; personal: with the overrides).
            "train_config": plan.kind,
            "personal_overrides": (dict(config.personal_overrides)
                                   if plan.kind == "personal" else {}),
            "gate": config.gate.as_provenance(),
            "dataset": plan.dataset_params,
            "regression_set": {"version": regression.version, "digest": regression.digest},
            # CPU kernels reduce in thread-count-dependent order: re-train with this.
            "torch_threads": torch.get_num_threads(),
            "torch_version": torch.__version__,
            "parent_adapter_digest": (plan.parent.adapter_digest
                                      if plan.parent is not None else None),
            **({"group": group} if group is not None else {}),
            # the regression bound's choice (workers/regression_bound.py), when one is set
            **({"regression_bound": bound} if bound is not None else {}),
        },
        seed=config.seed, dataset_from=plan.dataset_from, dataset_to=plan.dataset_to,
        dataset_digest=plan.dataset_digest,
        heldout_positions=[e.position for e in plan.heldout],
        code_version=code_version(), trigger=plan.trigger, train_seconds=round(train_s, 3),
    )
    return revision_event(EventType.REVISION_TRAINED, payload, tenant_id=plan.tenant_id,
                          user_id=plan.user_id, revision_id=plan.revision_id)
