"""The study's outputs: aggregates, a terminal table, a PNG plot, the JSON document.

Gains are relative NLL drops, positive = better: `gain(a vs b) = (nll_b - nll_a) / nll_b`.
Drift is the relative rise of the general-set NLL, positive = worse.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tessera.bench.study.measure import SpeakerFigures
from tessera.bench.study.style import finite_mean, style_aggregates_of

WORSE_THAN_PRIOR = 1.01  # served test NLL more than 1% above the final prior's


def _gain(new: float, old: float) -> float:
    return (old - new) / old if old else math.nan


_mean = finite_mean


def aggregates(speakers: Sequence[SpeakerFigures]) -> dict[str, Any]:
    """`beats_*` are shares of speakers (0..1); `mean_gain_*` mean relative NLL drops."""
    n = len(speakers)

    def share(pred: Sequence[bool]) -> float:
        return round(sum(pred) / n, 4) if n else math.nan

    def share_of(flags: Sequence[bool]) -> float:
        return round(sum(flags) / len(flags), 4) if flags else math.nan

    return {
        "n_speakers": n,
        "beats_base": share([s.nll_personal < s.nll_base for s in speakers]),
        "beats_shared": share([s.nll_personal < s.nll_shared for s in speakers]),
        "mean_gain_vs_base": _mean([_gain(s.nll_personal, s.nll_base) for s in speakers]),
        "mean_gain_vs_shared": _mean([_gain(s.nll_personal, s.nll_shared) for s in speakers]),
        "shared_beats_base": share([s.nll_shared < s.nll_base for s in speakers]),
        "mean_gain_shared_vs_base": _mean([_gain(s.nll_shared, s.nll_base) for s in speakers]),
        "from_base_beats_base": share([s.nll_personal_from_base < s.nll_base for s in speakers]),
        "from_base_beats_shared": share(
            [s.nll_personal_from_base < s.nll_shared for s in speakers]),
        "mean_gain_from_base_vs_base": _mean(
            [_gain(s.nll_personal_from_base, s.nll_base) for s in speakers]),
        "mean_drift": _mean([-_gain(s.drift_personal, s.drift_base) for s in speakers]),
        "max_drift": max((-_gain(s.drift_personal, s.drift_base) for s in speakers),
                         default=None),
        "gate_right": share_of([r for s in speakers for r in s.gate_right_by_night
                                if r is not None]),
        "promoted": sum(s.promoted for s in speakers),
        "rejected": sum(s.rejected for s in speakers),
        "personal_train_seconds": round(sum(s.train_seconds for s in speakers), 2),
        "mean_adapter_bytes": _mean([float(s.adapter_bytes) for s in speakers
                                     if s.adapter_bytes]),
        # What the NLL gate promises (never worse than the current prior), checked on the
        # test set; 1% is about the noise of a 12-message test NLL.
        "served_worse_than_prior": sum(s.nll_personal > WORSE_THAN_PRIOR * s.nll_shared
                                       for s in speakers),
        **style_aggregates(speakers),
    }


def style_aggregates(speakers: Sequence[SpeakerFigures]) -> dict[str, float | None]:
    """Means over speakers of the generated replies' attribution and repetition shares."""
    return style_aggregates_of([s.style for s in speakers])




def table(label: str, speakers: Sequence[SpeakerFigures], agg: dict[str, Any]) -> str:
    """A plain-text table (one row per speaker, then the aggregates)."""
    head = (f"{'speaker':<10} {'train':>5} {'test':>4} {'base':>7} {'shared':>7} "
            f"{'personal':>8} {'frombase':>8} {'vs base':>8} {'vs shrd':>8} {'drift':>7} "
            f"{'gate':>5}  nights")
    lines = [f"== {label} ==", head, "-" * len(head)]
    for s in speakers:
        lines.append(
            f"{s.id[:10]:<10} {s.n_train:>5} {s.n_test:>4} {s.nll_base:>7.4f} "
            f"{s.nll_shared:>7.4f} {s.nll_personal:>8.4f} {s.nll_personal_from_base:>8.4f} "
            f"{_gain(s.nll_personal, s.nll_base):>+8.2%} "
            f"{_gain(s.nll_personal, s.nll_shared):>+8.2%} "
            f"{-_gain(s.drift_personal, s.drift_base):>+7.2%} "
            f"{s.promoted:>2}/{s.promoted + s.rejected:<2}  "
            + " ".join(f"{v:.3f}" for v in s.nll_by_night)
        )
    lines.append(
        f"personal beats base {agg['beats_base']:.0%}, beats shared {agg['beats_shared']:.0%}; "
        f"mean gain vs base {_pct(agg['mean_gain_vs_base'])}, vs shared "
        f"{_pct(agg['mean_gain_vs_shared'])}; shared vs base "
        f"{_pct(agg['mean_gain_shared_vs_base'])}; from-base vs base "
        f"{_pct(agg['mean_gain_from_base_vs_base'])}; drift mean {_pct(agg['mean_drift'])}"
    )
    lines.append(
        f"replies attributed to their speaker: base {_share(agg['mean_attribution_base'])}, "
        f"shared {_share(agg['mean_attribution_shared'])}, personal "
        f"{_share(agg['mean_attribution_personal'])} (real messages "
        f"{_share(agg['mean_attribution_real'])}); repeating a word 3-gram: base "
        f"{_share(agg['mean_repetition_base'])}, shared {_share(agg['mean_repetition_shared'])}, "
        f"personal {_share(agg['mean_repetition_personal'])}; served worse than the prior: "
        f"{agg['served_worse_than_prior']}/{agg['n_speakers']}"
    )
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2%}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0%}"


def plot(path: Path, label: str, speakers: Sequence[SpeakerFigures]) -> Path:
    """NLL over nights per speaker: base, shared (prior) and personal lines, and the
    from-base ablation as a marker on the last night."""
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe in threads and CI
    import matplotlib.pyplot as plt

    n = len(speakers)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, s in zip(axes.flat, speakers, strict=False):
        nights = list(range(1, len(s.nll_by_night) + 1))
        ax.plot(nights, [s.nll_base] * len(nights), "k--", label="base")
        ax.plot(nights, s.nll_shared_by_night, "o-", color="tab:blue", label="shared (prior)")
        ax.plot(nights, s.nll_by_night, "o-", color="tab:red", label="personal (served)")
        ax.plot([nights[-1]], [s.nll_personal_from_base], "x", color="tab:gray", ms=9,
                label="personal from base")
        ax.set_title(f"{s.id[:8]} (train {s.n_train}, test {s.n_test})", fontsize=9)
        ax.set_xlabel("night")
        ax.set_ylabel("test NLL / token")
        ax.set_xticks(nights)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(label, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_json(path: Path, document: dict[str, Any]) -> str:
    """Write the document (sorted keys) and return it as one line for stdout."""
    document = _finite(document)
    line = json.dumps(document, sort_keys=True, allow_nan=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, sort_keys=True, indent=1, allow_nan=False) + "\n")
    return line


def _finite(value: Any) -> Any:
    """NaN/inf (a condition with nothing to measure) become null: JSON has no NaN."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
