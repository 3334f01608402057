"""A generation-time lever for style: serve each personal adapter pushed further from
the prior it was trained from (workers/adapter_extrapolation.py), at several strengths.

For each strength s, every speaker served a personal adapter (not the prior) gets the
extrapolated adapter `delta_personal + s * (delta_personal - delta_prior)` against the
final prior; speakers served the prior keep it. Reported per strength, beside the
unextrapolated figures of the same run: the personal replies' attribution and repetition
(same prompts, same classifier, same decoding) and the test NLL, since a style gain that
costs the speaker's own NLL is not one to ship.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tessera.bench.study.attribution import SpeakerClassifier
from tessera.bench.study.generate import Replies
from tessera.bench.study.measure import Measurer
from tessera.bench.study.style import ServedDigests, finite_mean
from tessera.workers.adapter_extrapolation import extrapolate
from tessera.workers.adapter_store import AdapterStore, load_adapter_blob, save_adapter_blob
from tessera.workers.repetition import repetition_share


def extrapolated_digest(
    adapters: AdapterStore, personal: str, prior: str, strength: float, folder: Path
) -> str:
    """The extrapolated adapter, put into `adapters`; its digest."""
    state, cfg = extrapolate(load_adapter_blob(adapters.path(personal)),
                             load_adapter_blob(adapters.path(prior)), strength)
    blob = folder / f"{personal[:12]}-x{strength:g}.safetensors"
    save_adapter_blob(state, cfg, blob)
    return adapters.put_file(blob)


def extrapolation_sweep(
    replies: Replies, classifier: SpeakerClassifier | None, measurer: Measurer,
    adapters: AdapterStore, served: Sequence[ServedDigests], strengths: Sequence[float],
) -> list[dict[str, float | None]]:
    """One entry per strength: `extrapolation`, how many speakers it changed, and the
    means over speakers of the personal replies' attribution and repetition and of the
    test-NLL gain vs the final prior (the unextrapolated run's figures are the s = 0
    ones)."""
    out: list[dict[str, float | None]] = []
    with tempfile.TemporaryDirectory(prefix="tessera-extrapolate-") as tmp:
        for strength in strengths:
            attribution, repetition, gains = [], [], []
            changed = 0
            for s in served:
                digest = s.served
                if s.served is not None and s.shared is not None and s.served != s.shared:
                    digest = extrapolated_digest(adapters, s.served, s.shared, strength,
                                                 Path(tmp))
                    changed += 1
                key = f"test/{s.speaker_id}"
                texts = replies.of(key, s.test, digest)
                attribution.append(classifier.attribution(s.speaker_id, texts)
                                   if classifier else math.nan)
                repetition.append(repetition_share(texts))
                shared_nll = measurer.nll(key, s.test, s.shared)
                gains.append((shared_nll - measurer.nll(key, s.test, digest)) / shared_nll)
            out.append({
                "extrapolation": strength,
                "speakers_extrapolated": changed,
                "mean_attribution_personal": finite_mean(attribution),
                "mean_repetition_personal": finite_mean(repetition),
                "mean_gain_vs_shared": finite_mean(gains),
            })
    return out
