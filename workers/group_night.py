"""A night's group (`TrainingGroup`): K users trained in one batched pass, each gated alone.

Per member, exactly what `RevisionPipeline.run` does for a request, with the same steps:
1. plan (`plan_personal`): a member already decided, or with nothing new, is skipped;
2. a member whose candidate a crashed attempt recorded (its `RevisionTrained` in the log,
   its blob in the store) is resumed, not retrained;
3. the others are trained together (`group_trainer.train_group`: each keeps their own
   warm start, examples, seed and config); each blob goes to the store and each
   `RevisionTrained` is appended on its own (the forget guard may refuse one member, not
   the group), its provenance naming the group and every member's inputs, so that
   re-training the group reproduces the digest (workers/reproduce.py). A group of one
   left to train takes the single-user path (`train_adapter`), as a request would;
4. candidates and baselines are measured together (`group_eval.evaluate_group`), then
   each member is decided by the pipeline's own `decide` (gate, history check, rebase
   rival, events, forget guard, publication), as alone.

A trainer killed anywhere in this leaves each member in one of: nothing recorded, trained
(recorded, undecided) or decided; the redelivered group retrains only the first kind and
decides the second, so every member ends with exactly one decided revision.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from tessera.workers import metrics
from tessera.workers.adapter_import import handle_request
from tessera.workers.gate import EvalMetrics
from tessera.workers.group_eval import evaluate_group
from tessera.workers.group_trainer import DEFAULT_CHUNK_TOKENS, GroupMember, train_group
from tessera.workers.pipeline import RevisionOutcome, RevisionPipeline, RevisionPlan
from tessera.workers.regression_bound import bound_record, bounded_blob
from tessera.workers.revision_train import rebase_head, train_and_store
from tessera.workers.training_request import TrainingGroup, TrainingMessage

log = logging.getLogger(__name__)

Candidate = tuple[str, int, dict[str, float]]  # (digest, bytes, seconds by stage)


def handle_message(pipeline: RevisionPipeline, message: TrainingMessage) -> str:
    """What a trainer does with any message: a group, an import or a request."""
    if not isinstance(message, TrainingGroup):
        return handle_request(pipeline, message).outcome
    outcomes = run_group(pipeline, message)
    counts = {o: sum(1 for x in outcomes if x.outcome == o)
              for o in ("promoted", "rejected", "skipped")}
    return "group: " + ", ".join(f"{n} {o}" for o, n in counts.items() if n)


def run_group(pipeline: RevisionPipeline, group: TrainingGroup, *,
              chunk_tokens: int = DEFAULT_CHUNK_TOKENS) -> list[RevisionOutcome]:
    """Every member's outcome, committed in the log when this returns (module docstring)."""
    outcomes: dict[str, RevisionOutcome] = {}
    plans: list[RevisionPlan] = []
    for request in group.members:
        planned = pipeline.plan_personal(request)
        if isinstance(planned, RevisionOutcome):
            log.info("skipped: %s", planned.reasons[0],
                     extra={"tenant_id": request.tenant_id, "user_id": request.user_id,
                            "group_id": group.group_id})
            outcomes[request.user_id] = planned
        else:
            plans.append(planned)
    ready: dict[str, Candidate] = {}
    fresh: list[RevisionPlan] = []
    for plan in plans:
        recorded = pipeline.recorded_candidate(plan)
        if recorded is None:
            fresh.append(plan)
        else:
            ready[plan.revision_id] = (*recorded, {"dataset": plan.dataset_seconds})
    trained = _train_alone(pipeline, fresh[0]) if len(fresh) == 1 else \
        _train_together(pipeline, group.group_id, fresh, chunk_tokens) if fresh else {}
    for plan in fresh:
        got = trained[plan.revision_id]
        if isinstance(got, RevisionOutcome):
            outcomes[plan.user_id] = got
        else:
            ready[plan.revision_id] = got
    deciding = [p for p in plans if p.revision_id in ready]
    measured = _measure_together(pipeline, deciding, ready)
    for plan, figures in zip(deciding, measured, strict=True):
        digest, n_bytes, seconds = ready[plan.revision_id]
        outcomes[plan.user_id] = pipeline.decide(plan, digest, n_bytes, seconds,
                                                 measured=figures)
    for outcome in outcomes.values():
        metrics.record_outcome(outcome.outcome)
    return [outcomes[m.user_id] for m in group.members]


def _train_alone(pipeline: RevisionPipeline, plan: RevisionPlan
                 ) -> dict[str, Candidate | RevisionOutcome]:
    ids = {"tenant_id": plan.tenant_id, "user_id": plan.user_id,
           "revision_id": plan.revision_id}
    digest, n_bytes, train_s, store_s, bound = train_and_store(
        pipeline.train_candidate, pipeline.adapters, plan, ids)
    refused = pipeline.record_trained(plan, digest, n_bytes, train_s, bound=bound)
    seconds = {"dataset": plan.dataset_seconds, "train": train_s, "store": store_s}
    return {plan.revision_id: refused or (digest, n_bytes, seconds)}


def member_inputs(pipeline: RevisionPipeline, plan: RevisionPlan) -> dict[str, Any]:
    """What re-training needs of one member: its dataset, warm start and seed."""
    return {"user_id": plan.user_id, "revision_id": plan.revision_id,
            "dataset": plan.dataset_params, "dataset_digest": plan.dataset_digest,
            "parent_adapter_digest": plan.parent.adapter_digest if plan.parent else None,
            "seed": pipeline.config.seed}


def _train_together(pipeline: RevisionPipeline, group_id: str, plans: list[RevisionPlan],
                    chunk_tokens: int) -> dict[str, Candidate | RevisionOutcome]:
    engine, adapters = pipeline.engine, pipeline.adapters
    cfg = pipeline.config.train_config("personal")
    members = [GroupMember(p.user_id, p.train, cfg, seed=pipeline.config.seed,
                           init_adapter=adapters.path(p.parent.adapter_digest)
                           if p.parent is not None else None) for p in plans]
    ids = {"tenant_id": plans[0].tenant_id, "group_id": group_id}
    log.info("group training started: %d users (%s)", len(plans),
             ", ".join(p.user_id for p in plans), extra=ids)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tessera-group-") as tmp:
        results = train_group(engine.model, engine.tokenizer, members,
                              base_digest=engine.base.digest, out_dir=Path(tmp),
                              chunk_tokens=chunk_tokens)
        max_rise = cfg.max_regression_rise
        blobs = [bounded_blob(engine.model, engine.tokenizer, r.result.blob_path,
                              member.init_adapter, max_rise=max_rise,
                              stretch=cfg.step_stretch,
                              regression=pipeline.regression,
                              max_length=pipeline.config.eval_max_length,
                              cache=pipeline.metrics_cache,
                              also_within=rebase_head(adapters, plan))
                 if r.result is not None else None
                 for r, member, plan in zip(results, members, plans, strict=True)]
        train_s = time.perf_counter() - started
        metrics.record_stage("train", train_s)
        bounds = [bound_record(b) if b is not None else None for b in blobs]
        # Every blob in the store before any record names one.
        digests = [adapters.put_file(b) if b is not None else None for b in blobs]
    log.info("group trained in %.1fs", train_s, extra=ids)
    group = {"group_id": group_id, "size": len(plans), "chunk_tokens": chunk_tokens,
             "members": [member_inputs(pipeline, p) for p in plans]}
    out: dict[str, Candidate | RevisionOutcome] = {}
    for slot, (plan, result, digest, bound) in enumerate(
            zip(plans, results, digests, bounds, strict=True)):
        if digest is None:
            # Deterministic (a retry fails alike): no revision, the member is told why.
            why = f"training failed in group {group_id}: {result.error}"
            log.error("%s", why, extra={**ids, "user_id": plan.user_id})
            out[plan.revision_id] = RevisionOutcome("skipped", None, [why],
                                                    tenant_id=plan.tenant_id,
                                                    user_id=plan.user_id)
            continue
        n_bytes = adapters.path(digest).stat().st_size
        refused = pipeline.record_trained(plan, digest, n_bytes, train_s,
                                          group={**group, "slot": slot}, bound=bound)
        out[plan.revision_id] = refused or (
            digest, n_bytes, {"dataset": plan.dataset_seconds, "train": train_s})
    return out


def _measure_together(pipeline: RevisionPipeline, plans: list[RevisionPlan],
                      ready: dict[str, Candidate]) -> list[dict[Path | None, EvalMetrics]]:
    """Each plan's candidate and baseline figures, by adapter file, from one group pass."""
    if not plans:
        return []
    adapters, config = pipeline.adapters, pipeline.config
    candidates = [adapters.path(ready[p.revision_id][0]) for p in plans]
    baselines = [adapters.path(p.baseline.adapter_digest) if p.baseline is not None else None
                 for p in plans]
    started = time.perf_counter()
    pairs = evaluate_group(
        pipeline.engine.model, pipeline.engine.tokenizer, candidates=candidates,
        baselines=baselines, heldouts=[p.heldout for p in plans],
        regression=pipeline.regression, max_length=config.eval_max_length,
        canaries=config.canaries, cache=pipeline.metrics_cache)
    log.info("group of %d measured in %.1fs", len(plans), time.perf_counter() - started)
    return [{cand: c, base: b} for cand, base, (c, b) in zip(candidates, baselines, pairs,
                                                             strict=True)]
