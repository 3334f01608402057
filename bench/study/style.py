"""Do the served model's replies sound like their person? Per speaker, on their test prompts.

- `attribution_<model>`: the share of the model's replies that the speaker classifier
  (bench/study/attribution.py, trained on the studied speakers' history messages only)
  attributes to this speaker; `attribution_real` is the same classifier on the speaker's
  real test messages, the ceiling.
- `repetition_<model>`: the share of replies that repeat a word 3-gram
  (workers/repetition.py, the test the gate's canary uses).

Models: the base, the tenant prior after the last night (`shared`), and what the speaker
is served after the last night (`personal`), as for the NLL figures.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from tessera.bench.study.attribution import SpeakerClassifier
from tessera.bench.study.design import StudyDesign, examples_of
from tessera.bench.study.generate import Replies
from tessera.workers.dataset import Example
from tessera.workers.repetition import repetition_share

SAMPLES = 3  # replies per model kept in the JSON, to read beside the figures


@dataclass(frozen=True)
class StyleFigures:
    attribution_base: float = math.nan
    attribution_shared: float = math.nan
    attribution_personal: float = math.nan
    attribution_real: float = math.nan
    repetition_base: float = math.nan
    repetition_shared: float = math.nan
    repetition_personal: float = math.nan
    sample_replies: dict[str, list[str]] = field(default_factory=dict)


def fit_classifier(design: StudyDesign, *, seed: int = 0) -> SpeakerClassifier | None:
    """The classifier over the studied speakers, trained on their history messages (the
    targets the system trains on); None with a single speaker (nothing to tell apart)."""
    if len(design.speakers) < 2:
        return None
    history = {s.speaker_id: [e.target for e in examples_of(s.history, s.speaker_id)]
               for s in design.speakers}
    return SpeakerClassifier.fit(history, seed=seed)


def style_figures(
    replies: Replies,
    classifier: SpeakerClassifier | None,
    *,
    speaker_id: str,
    test: Sequence[Example],
    shared: str | None,
    served: str | None,
) -> StyleFigures:
    """`shared`, `served`: adapter digests of the final prior and the served model (None:
    the base model)."""
    key = f"test/{speaker_id}"
    generated = {"base": replies.of(key, test, None), "shared": replies.of(key, test, shared),
                 "personal": replies.of(key, test, served)}

    def attribution(texts: Sequence[str]) -> float:
        return classifier.attribution(speaker_id, texts) if classifier else math.nan

    return StyleFigures(
        attribution_base=attribution(generated["base"]),
        attribution_shared=attribution(generated["shared"]),
        attribution_personal=attribution(generated["personal"]),
        attribution_real=attribution([e.target for e in test]),
        repetition_base=repetition_share(generated["base"]),
        repetition_shared=repetition_share(generated["shared"]),
        repetition_personal=repetition_share(generated["personal"]),
        sample_replies={m: list(texts[:SAMPLES]) for m, texts in generated.items()},
    )


@dataclass(frozen=True)
class ServedDigests:
    """What one speaker's style figures compare: the final prior and the served model."""

    speaker_id: str
    test: Sequence[Example]
    shared: str | None
    served: str | None


def penalty_sweep(
    replies: Replies, classifier: SpeakerClassifier | None, served: Sequence[ServedDigests],
    penalties: Sequence[float],
) -> list[dict[str, float | None]]:
    """The style aggregates again at each other repetition penalty (same models, same
    prompts), so a serving default can be chosen from one run with every arm's figures."""
    sweep: list[dict[str, float | None]] = []
    for penalty in penalties:
        other = replies.with_config(dataclasses.replace(
            replies.config, repetition_penalty=penalty, sweep_penalties=()))
        figures = [style_figures(other, classifier, speaker_id=s.speaker_id, test=s.test,
                                 shared=s.shared, served=s.served) for s in served]
        sweep.append({"repetition_penalty": penalty, **style_aggregates_of(figures)})
    return sweep


def style_aggregates_of(figures: Sequence[StyleFigures]) -> dict[str, float | None]:
    """Means over speakers of the generated replies' attribution and repetition shares
    (non-finite skipped; None when no speaker has the figure)."""
    out: dict[str, float | None] = {}
    for model in ("base", "shared", "personal", "real"):
        out[f"mean_attribution_{model}"] = finite_mean(
            [getattr(f, f"attribution_{model}") for f in figures])
    for model in ("base", "shared", "personal"):
        out[f"mean_repetition_{model}"] = finite_mean(
            [getattr(f, f"repetition_{model}") for f in figures])
    return out


def finite_mean(values: Sequence[float]) -> float | None:
    """The mean of the finite values, rounded for the JSON (None when there are none)."""
    finite = [v for v in values if math.isfinite(v)]
    return round(statistics.fmean(finite), 5) if finite else None
