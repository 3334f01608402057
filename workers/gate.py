"""The promotion gate: a pure decision from a candidate's and a baseline's metrics.

The baseline is what the user is served now (their promoted revision, else the tenant
prior, else the base model). A candidate is promoted only if every check passes; each
failed check adds one human-readable reason with the numbers behind it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tessera.workers.canary_repetition import repetition_failures


class GateConfig(BaseModel):
    """Thresholds of the gate (recorded with every decision)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A floor, not a noise margin: on the study's tuning speakers every candidate warm-started
    # from what its user was served beat it on the test set (56 of 56), and a 1% margin threw
    # away every gain under it (18 of 18 rejections wrong). 0.1% still refuses a candidate
    # that learnt nothing (gain 0). bench/README.md, "Issue #14's gate floor".
    min_gain: float = Field(
        0.001, ge=0, lt=1,
        description="Least relative drop of the user's held-out NLL vs the baseline "
        "(0.001 = 0.1%).",
    )
    max_regression: float = Field(
        0.02, ge=0,
        description="Most relative rise of the shared regression-set NLL vs the baseline.",
    )
    max_adapter_norm: float = Field(
        50.0, gt=0,
        description="Largest allowed Frobenius norm of one module's update (alpha/r)*B@A.",
    )
    # A mean NLL over 2 examples moves by more than `min_gain` from noise alone (the study
    # saw the gate agree with the test set 2 times in 6 on 2 examples), so a decision needs
    # this many; 8 matches the default `TESSERA_HOLDOUT_K`. Small setups (tests, smoke
    # studies) lower it explicitly, e.g. `TESSERA_GATE_OVERRIDES='{"min_heldout_examples": 2}'`.
    min_heldout_examples: int = Field(
        8, ge=0, description="Fewest held-out user examples a decision may rest on; fewer: "
        "rejected.",
    )

    # A loop repeats the words right before it (workers/canary_repetition.py); a person's
    # parallel phrasing ("I'm a math teacher. I'm a math student.") is not one, though the
    # earlier count of repeated 3-grams refused 3 of the bound run's 5 candidates on such
    # answers, all better on test (bench/README.md, "Issue #14's canary").
    max_canary_repeats: int = Field(
        0, ge=0, description="How many words longer than the baseline's generation for the "
        "same prompt a canary generation's longest loop may be; longer: rejected.",
    )

    def as_provenance(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


@dataclass(frozen=True, slots=True)
class EvalMetrics:
    """One model's (base, prior, revision) figures on one user's evaluation data."""

    user_nll: float  # mean target-token NLL on the user's held-out examples
    regression_nll: float  # mean target-token NLL on the shared regression set
    adapter_norm: float = 0.0  # max per-module ||(alpha/r) B@A||_F; 0 for the base model
    heldout_examples: int = 0
    regression_version: str = ""
    # (canary prompt, what was wrong with its output), one per degenerate canary
    canary_failures: tuple[tuple[str, str], ...] = field(default=())
    canary_outputs: tuple[str, ...] = field(default=())
    canary_prompts: tuple[str, ...] = field(default=())  # aligned with canary_outputs

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["canary_failures"] = [list(f) for f in self.canary_failures]
        out["canary_outputs"] = list(self.canary_outputs)
        out["canary_prompts"] = list(self.canary_prompts)
        return out


@dataclass(frozen=True, slots=True)
class GateDecision:
    promote: bool
    reasons: list[str]  # why not (when rejected), or what was gained (when promoted)
    user_gain: float  # relative drop of user NLL (positive = better)
    regression_change: float  # relative rise of regression NLL (positive = worse)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _relative(new: float, old: float) -> float:
    """(new - old) / |old|; a change from exactly zero counts as infinitely large."""
    if old == 0:
        return 0.0 if new == 0 else math.copysign(math.inf, new)
    return (new - old) / abs(old)


def decide(candidate: EvalMetrics, baseline: EvalMetrics, cfg: GateConfig) -> GateDecision:
    """Promote `candidate` over `baseline` only if every check below passes."""
    failures: list[str] = []
    numbers = {
        "candidate user NLL": candidate.user_nll,
        "candidate regression NLL": candidate.regression_nll,
        "candidate adapter norm": candidate.adapter_norm,
        "baseline user NLL": baseline.user_nll,
        "baseline regression NLL": baseline.regression_nll,
    }
    non_finite = [f"{name} = {value}" for name, value in numbers.items()
                  if not math.isfinite(value)]
    if non_finite:
        failures.append("non-finite metrics: " + ", ".join(non_finite))
        return GateDecision(False, failures, math.nan, math.nan)

    gain = -_relative(candidate.user_nll, baseline.user_nll)
    regression = _relative(candidate.regression_nll, baseline.regression_nll)
    if candidate.regression_version != baseline.regression_version:
        failures.append(
            f"regression sets differ (candidate {candidate.regression_version!r}, baseline "
            f"{baseline.regression_version!r}); the figures are not comparable"
        )
    if candidate.heldout_examples < cfg.min_heldout_examples:
        failures.append(
            f"too few held-out examples: {candidate.heldout_examples} < "
            f"{cfg.min_heldout_examples} (the gain would be noise)"
        )
    if gain < cfg.min_gain:
        failures.append(
            f"user held-out NLL {candidate.user_nll:.4f} vs baseline {baseline.user_nll:.4f}: "
            f"gain {gain:+.2%} < required {cfg.min_gain:.2%}"
        )
    if regression > cfg.max_regression:
        failures.append(
            f"regression-set NLL {candidate.regression_nll:.4f} vs baseline "
            f"{baseline.regression_nll:.4f}: worse by {regression:+.2%} > allowed "
            f"{cfg.max_regression:.2%}"
        )
    if candidate.adapter_norm > cfg.max_adapter_norm:
        failures.append(
            f"adapter norm {candidate.adapter_norm:.3f} > bound {cfg.max_adapter_norm:.3f}"
        )
    # A canary the baseline already fails says nothing about this adapter: only new ones count.
    already = {prompt for prompt, _ in baseline.canary_failures}
    failures.extend(
        f"degenerate canary {prompt!r}: {why}"
        for prompt, why in candidate.canary_failures
        if prompt not in already
    )
    failures.extend(repetition_failures(
        candidate.canary_prompts or baseline.canary_prompts, candidate.canary_outputs,
        baseline.canary_outputs, max_extra=cfg.max_canary_repeats,
        skip=frozenset(prompt for prompt, _ in candidate.canary_failures),
    ))
    if failures:
        return GateDecision(False, failures, gain, regression)
    return GateDecision(
        True,
        [f"user held-out NLL {candidate.user_nll:.4f} vs {baseline.user_nll:.4f} "
         f"(gain {gain:+.2%}); regression-set NLL change {regression:+.2%}; "
         f"adapter norm {candidate.adapter_norm:.3f}; canaries ok"],
        gain,
        regression,
    )
