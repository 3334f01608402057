"""The night benchmark: one tenant's users' revisions trained and gated one by one (K = 1,
the existing single-user path) and in groups of K (one batched pass per group), in one run.

Setup, not timed: a quickly-trained shared adapter (a stand-in for the tenant prior: one
epoch over the first few training examples of every user) is every user's warm start and
baseline, and its regression-set and canary figures are measured once into the metrics
cache, as a long-running trainer holds them. Then for each K, every user's revision:
- K = 1: `train_adapter` + `evaluate` (baseline, candidate) + `decide`, user after user;
- K > 1: `train_group` + `evaluate_group` + `decide`, group after group.
Timed per K: `seconds` (all users), `users_per_hour`; gate outcome counts; and
`mean_heldout_gain`, the mean over users of the relative drop of the user's held-out NLL
from the baseline's, in percent points (the gate's `user_gain` x 100).

The core (`run_night_bench`) takes a loaded model and the users' dataset splits, so a test
runs it on the tiny model; `tessera bench night` feeds it the base model and chitchat
speakers.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tessera.workers.adapter_store import sha256_file
from tessera.workers.dataset import DatasetSplit
from tessera.workers.evaluator import MetricsCache, evaluate
from tessera.workers.gate import GateConfig, GateDecision, decide
from tessera.workers.group_eval import evaluate_group
from tessera.workers.group_trainer import GroupMember, train_group
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.regression_set import RegressionSet
from tessera.workers.trainer import train_adapter

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class NightBenchConfig:
    ks: tuple[int, ...]  # group sizes to run; 1 = the single-user path (always run)
    lora: LoraTrainConfig  # the personal revisions' training
    gate: GateConfig
    prior_examples_per_user: int = 4  # each user's first train examples in the prior
    prior_lr: float = 1e-3
    chunk_tokens: int = 1024  # padded tokens per chunk of a group step
    canaries: bool = True


@dataclass(frozen=True, slots=True)
class _UserOutcome:
    user: str
    digest: str
    gain_points: float
    decision: GateDecision


def _prior(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
           splits: Sequence[DatasetSplit], config: NightBenchConfig, *, base_digest: str,
           folder: Path) -> Path:
    sample = [e for s in splits for e in s.train[: config.prior_examples_per_user]]
    lora = config.lora.with_overrides({"epochs": 1, "lr": config.prior_lr})
    result = train_adapter(model, tokenizer, sample, config=lora, base_digest=base_digest,
                           out_dir=folder / "prior")
    blob: Path = result.blob_path
    return blob


def _alone(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, user: str,
           split: DatasetSplit, prior: Path, config: NightBenchConfig, *, base_digest: str,
           regression: RegressionSet, cache: MetricsCache, folder: Path) -> _UserOutcome:
    """One user through the existing single-user path."""
    result = train_adapter(model, tokenizer, split.train, config=config.lora,
                           base_digest=base_digest, init_adapter=prior, out_dir=folder)
    kw: dict[str, Any] = {"heldout": split.heldout, "regression": regression,
                          "max_length": config.lora.max_length,
                          "canaries": config.canaries, "cache": cache}
    baseline = evaluate(model, tokenizer, adapter=prior, **kw)
    candidate = evaluate(model, tokenizer, adapter=result.blob_path, **kw)
    decision = decide(candidate, baseline, config.gate)
    return _UserOutcome(user, sha256_file(result.blob_path), 100 * decision.user_gain, decision)


def _group(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, users: Sequence[str],
           splits: Sequence[DatasetSplit], prior: Path, config: NightBenchConfig, *,
           base_digest: str, regression: RegressionSet, cache: MetricsCache,
           folder: Path) -> list[_UserOutcome]:
    """A group of users through one batched training pass and one batched evaluation."""
    members = [GroupMember(u, s.train, config.lora, init_adapter=prior)
               for u, s in zip(users, splits, strict=True)]
    outcomes = train_group(model, tokenizer, members, base_digest=base_digest,
                           out_dir=folder, chunk_tokens=config.chunk_tokens)
    trained = [(u, s, o.result) for u, s, o in zip(users, splits, outcomes, strict=True)
               if o.result is not None]
    figures = evaluate_group(
        model, tokenizer, candidates=[r.blob_path for _, _, r in trained],
        baselines=[prior] * len(trained), heldouts=[s.heldout for _, s, _ in trained],
        regression=regression, max_length=config.lora.max_length,
        canaries=config.canaries, cache=cache)
    out = []
    for (user, _, result), (candidate, baseline) in zip(trained, figures, strict=True):
        decision = decide(candidate, baseline, config.gate)
        out.append(_UserOutcome(user, sha256_file(result.blob_path),
                                100 * decision.user_gain, decision))
    return out


def _summary(k: int, seconds: float, cpu: float, outcomes: Sequence[_UserOutcome]
             ) -> dict[str, Any]:
    promoted = sum(1 for o in outcomes if o.decision.promote)
    gains = [o.gain_points for o in outcomes]
    return {
        "k": k,
        "users_per_hour": round(3600.0 * len(outcomes) / seconds, 2),
        "seconds": round(seconds, 2),
        # this process's CPU seconds (all threads): steadier than the wall clock on a
        # machine shared with other jobs
        "cpu_seconds": round(cpu, 2),
        "promoted": promoted,
        "rejected": len(outcomes) - promoted,
        "mean_heldout_gain": round(sum(gains) / max(1, len(gains)), 3),
        "per_user_gain": {o.user: round(o.gain_points, 3) for o in outcomes},
        "digests": {o.user: o.digest for o in outcomes},
    }


def run_night_bench(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    splits: Sequence[DatasetSplit],
    *,
    users: Sequence[str],
    config: NightBenchConfig,
    regression: RegressionSet,
    base_digest: str,
    device: str,
    progress: Progress | None = None,
    checkpoint: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run every K of `config.ks` (K = 1 included) over the same users; the JSON report.
    `checkpoint` gets the report so far after each K (`"partial": true` until the last),
    so a run stopped on a starved machine still leaves the K values it finished."""
    say = progress or (lambda _line: None)
    ks = sorted({1, *config.ks})
    cache = MetricsCache()
    results = []
    with tempfile.TemporaryDirectory(prefix="tessera-night-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        prior = _prior(model, tokenizer, splits, config, base_digest=base_digest, folder=folder)
        evaluate(model, tokenizer, adapter=prior, heldout=(), regression=regression,
                 max_length=config.lora.max_length, canaries=config.canaries, cache=cache)
        setup = time.perf_counter() - t0
        say(f"prior and its baseline figures: {setup:.1f}s")
        for k in ks:
            started, cpu_started = time.perf_counter(), time.process_time()
            outcomes: list[_UserOutcome] = []
            for start in range(0, len(users), k):
                part = folder / f"k{k}" / f"{start:04d}"
                if k == 1:
                    outcomes.append(_alone(
                        model, tokenizer, users[start], splits[start], prior, config,
                        base_digest=base_digest, regression=regression, cache=cache,
                        folder=part))
                else:
                    outcomes += _group(
                        model, tokenizer, users[start:start + k], splits[start:start + k],
                        prior, config, base_digest=base_digest, regression=regression,
                        cache=cache, folder=part)
                say(f"k={k}: {len(outcomes)}/{len(users)} users, "
                    f"{time.perf_counter() - started:.1f}s wall, "
                    f"{time.process_time() - cpu_started:.1f}s cpu")
            results.append(_summary(k, time.perf_counter() - started,
                                    time.process_time() - cpu_started, outcomes))
            if checkpoint is not None and k != ks[-1]:
                checkpoint({**_report(results, splits, config, device=device, setup=setup),
                            "partial": True})
    return _report(results, splits, config, device=device, setup=setup)


def _report(results: Sequence[dict[str, Any]], splits: Sequence[DatasetSplit],
            config: NightBenchConfig, *, device: str, setup: float) -> dict[str, Any]:
    base_rate = results[0]["users_per_hour"]
    return {
        "bench": "night",
        "device": device,
        "users": len(splits),
        "train_examples": [len(s.train) for s in splits],
        "heldout_examples": [len(s.heldout) for s in splits],
        "lora": config.lora.as_provenance(),
        "gate": config.gate.as_provenance(),
        "chunk_tokens": config.chunk_tokens,
        "setup_seconds": round(setup, 2),
        "results": list(results),
        "speedup": {str(r["k"]): round(r["users_per_hour"] / base_rate, 3) for r in results},
        "cpu_speedup": {str(r["k"]): round(results[0]["cpu_seconds"] / r["cpu_seconds"], 3)
                        for r in results},
    }
