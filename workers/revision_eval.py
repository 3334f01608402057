"""Evaluating a trained candidate: its figures, the baseline's, and the history check.

Measurement only; what the figures mean for promotion is workers/revision_decide.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.workers.adapter_store import AdapterStore
from tessera.workers.evaluator import MetricsCache, evaluate
from tessera.workers.gate import EvalMetrics
from tessera.workers.history_gate import HistoryCheck, history_check
from tessera.workers.regression_set import RegressionSet
from tessera.workers.revision_types import Engine, PipelineConfig, RevisionPlan
from tessera.workers.stale_heads import Evaluate, better_baseline


class PlanEvaluator:
    """An adapter's (None: the base model's) figures on a plan's held-out examples and
    the shared regression set, with the worker's cache of figures that do not change."""

    def __init__(self, engine: Engine, config: PipelineConfig, regression: RegressionSet,
                 cache: MetricsCache) -> None:
        self._engine = engine
        self._config = config
        self._regression = regression
        self._cache = cache

    def __call__(self, adapter: Path | None, plan: RevisionPlan) -> EvalMetrics:
        return evaluate(
            self._engine.model, self._engine.tokenizer, adapter=adapter, heldout=plan.heldout,
            regression=self._regression, max_length=self._config.eval_max_length,
            canaries=self._config.canaries, cache=self._cache,
        )


@dataclass(frozen=True)
class Figures:
    """What the gate decides on."""

    plan: RevisionPlan  # its baseline is the one compared with (on a rebase, the better)
    candidate: EvalMetrics
    baseline: EvalMetrics
    rivals: dict[str, float]  # a rebase's head and prior NLLs, for the record
    history: HistoryCheck | None  # on the user's earlier held-out examples, if any


def measure(
    plan: RevisionPlan, digest: str, *, evaluate_with: Evaluate, engine: Engine,
    adapters: AdapterStore, config: PipelineConfig,
) -> Figures:
    """The candidate `digest` and the plan's baseline measured alike (`evaluate_with`)."""
    candidate = evaluate_with(adapters.path(digest), plan)
    plan, base_metrics, rivals = better_baseline(plan, evaluate_with, adapters)
    baseline_path = (adapters.path(plan.baseline.adapter_digest)
                     if plan.baseline is not None else None)
    history = history_check(engine, plan.history, adapters.path(digest), baseline_path,
                            max_length=config.eval_max_length)
    return Figures(plan, candidate, base_metrics, rivals, history)
