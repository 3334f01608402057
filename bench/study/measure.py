"""Mean target-token NLL of every condition, per speaker.

Conditions on the speaker's test set (never sent to the system): the base model; the
tenant prior after the last night (`nll_shared`) and after each night; what the speaker
is served after each night (`nll_by_night`; the last one is `nll_personal`); the
from-base ablation. On the general set (other speakers' messages): base vs the served
personal model (drift). NLLs are cached by (model digest, data set), so a model served
to several speakers or on several nights is measured once per data set.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tessera.bench.study.runner import Replay
from tessera.bench.study.style import StyleFigures
from tessera.events.catalog import ServedRevision
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.dataset import Example
from tessera.workers.evaluator import mean_target_nll
from tessera.workers.pipeline import Engine


@dataclass
class SpeakerFigures:
    """One speaker's figures (the `speakers` entries of study.json)."""

    id: str
    n_train: int  # history messages sent to the system
    n_test: int
    nll_base: float
    nll_personal: float  # what the speaker is served after the last night
    nll_shared: float  # the tenant prior after the last night
    nll_personal_from_base: float
    nll_by_night: list[float]
    nll_shared_by_night: list[float]
    # Each night's candidate (promoted or rejected) on the test set, NaN when none was
    # trained; and whether the gate's decision agrees with the test set (None: no decision).
    nll_candidate_by_night: list[float]
    gate_right_by_night: list[bool | None]
    drift_base: float  # base model on the general set
    drift_personal: float  # served personal model on the general set
    promoted: int
    rejected: int
    decisions_by_night: list[str]  # "promoted" | "rejected" | "skipped" | "-" per night
    served_source: str  # "personal" | "prior" | "base" after the last night
    adapter_bytes: int  # the served personal adapter (0 when none)
    train_seconds: float  # the system's personal revisions of this speaker
    from_base_train_seconds: float
    gate_reasons: list[str] = field(default_factory=list)  # last night's
    # Generated replies: attribution to the speaker and repetition (bench/study/style.py);
    # flat in the JSON (`attribution_personal`, ...).
    style: StyleFigures = field(default_factory=StyleFigures)

    def to_json(self) -> dict[str, Any]:
        fields = asdict(self)
        style = fields.pop("style")
        return {k: _round(v) for k, v in {**fields, **style}.items()}


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 5) if math.isfinite(value) else None
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


class Measurer:
    """NLLs of the base model or base + a stored adapter, cached by content."""

    def __init__(self, engine: Engine, adapters: AdapterStore, *, max_length: int) -> None:
        self._engine = engine
        self._adapters = adapters
        self._max_length = max_length
        self._cache: dict[tuple[str, str], float] = {}

    def nll(self, data_key: str, examples: Sequence[Example], model: str | Path | None) -> float:
        """`model`: None (base), an adapter digest in the store, or a blob file."""
        key = (str(model or "base"), data_key)
        if key not in self._cache:
            adapter = (self._adapters.path(model) if isinstance(model, str)
                       else model)
            self._cache[key] = mean_target_nll(
                self._engine.model, self._engine.tokenizer, examples, adapter=adapter,
                max_length=self._max_length)
        return self._cache[key]

    def blob_bytes(self, digest: str) -> int:
        return int(self._adapters.path(digest).stat().st_size)

    def served(self, data_key: str, examples: Sequence[Example], served: ServedRevision) -> float:
        return self.nll(data_key, examples, served.adapter_digest)


def speaker_figures(
    measurer: Measurer,
    replay: Replay,
    *,
    speaker_id: str,
    n_train: int,
    test: Sequence[Example],
    general: Sequence[Example],
    from_base: Path,
    from_base_seconds: float,
) -> SpeakerFigures:
    test_key = f"test/{speaker_id}"
    by_night = [measurer.served(test_key, test, n.served[speaker_id]) for n in replay.nights]
    shared_by_night = [measurer.served(test_key, test, n.prior) for n in replay.nights]
    last = replay.nights[-1]
    final = last.served[speaker_id]
    decisions: list[str] = []
    promoted, rejected, train_s = 0, 0, 0.0
    for night in replay.nights:
        mine = night.outcomes_of(speaker_id)
        decisions.append(mine[-1].outcome if mine else "-")
        promoted += sum(o.outcome == "promoted" for o in mine)
        rejected += sum(o.outcome == "rejected" for o in mine)
        train_s += sum(o.seconds.get("train", 0.0) for o in mine)
    candidates, right = _candidates(measurer, replay, speaker_id, test_key, test,
                                    by_night, shared_by_night)
    last_mine = last.outcomes_of(speaker_id)
    adapter_bytes = 0
    if final.source == "personal" and final.adapter_digest is not None:
        adapter_bytes = measurer.blob_bytes(final.adapter_digest)
    return SpeakerFigures(
        id=speaker_id, n_train=n_train, n_test=len(test),
        nll_base=measurer.nll(test_key, test, None),
        nll_personal=by_night[-1], nll_shared=shared_by_night[-1],
        nll_personal_from_base=measurer.nll(test_key, test, from_base),
        nll_by_night=by_night, nll_shared_by_night=shared_by_night,
        nll_candidate_by_night=candidates, gate_right_by_night=right,
        drift_base=measurer.nll("general", general, None),
        drift_personal=measurer.served("general", general, final),
        promoted=promoted, rejected=rejected, decisions_by_night=decisions,
        served_source=final.source, adapter_bytes=adapter_bytes, train_seconds=train_s,
        from_base_train_seconds=from_base_seconds,
        gate_reasons=list(last_mine[-1].reasons) if last_mine else [],
    )


def _candidates(
    measurer: Measurer, replay: Replay, speaker_id: str, test_key: str,
    test: Sequence[Example], by_night: Sequence[float], shared_by_night: Sequence[float],
) -> tuple[list[float], list[bool | None]]:
    """Test-set NLL of each night's candidate, and whether the gate got it right: a
    promotion is right when the candidate beats its baseline on the test set, a rejection
    when it does not. The baseline is the speaker's personal head if one was promoted on
    an earlier night (served after the previous night), else that night's prior."""
    candidates: list[float] = []
    right: list[bool | None] = []
    has_head = False
    for i, night in enumerate(replay.nights):
        decided = [o for o in night.outcomes_of(speaker_id)
                   if o.outcome != "skipped" and o.adapter_digest]
        if not decided:
            candidates.append(math.nan)
            right.append(None)
            continue
        outcome = decided[-1]
        nll = measurer.nll(test_key, test, outcome.adapter_digest)
        baseline = by_night[i - 1] if has_head and i > 0 else shared_by_night[i]
        candidates.append(nll)
        right.append((nll < baseline) == (outcome.outcome == "promoted"))
        has_head = has_head or outcome.outcome == "promoted"
    return candidates, right
