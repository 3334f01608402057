"""One study: for each configuration (e.g. each rank of the sweep), replay the design
through the real system in its own tenant, train the from-base ablation, measure every
condition and aggregate. Returns the JSON document of `bench/results/study.json`."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from tessera.bench.study.ablation import train_from_base
from tessera.bench.study.design import StudyDesign, examples_of
from tessera.bench.study.extrapolation import extrapolation_sweep
from tessera.bench.study.generate import GenerationConfig, Replies
from tessera.bench.study.measure import Measurer, SpeakerFigures, speaker_figures
from tessera.bench.study.report import aggregates
from tessera.bench.study.runner import STUDY_SCHEDULE, Ingest, NightRecord, Replay, replay
from tessera.bench.study.style import (
    ServedDigests,
    fit_classifier,
    penalty_sweep,
    style_figures,
)
from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import PRIOR_USER_ID
from tessera.workers.adapter_store import AdapterStore
from tessera.workers.pipeline import Engine, PipelineConfig, RevisionPipeline
from tessera.workers.scheduler import ScheduleConfig

log = logging.getLogger(__name__)

DEFAULT_GENERATION = GenerationConfig()


@dataclass(frozen=True)
class StudyConfig:
    """One arm of the study: a label and the pipeline configuration it runs with."""

    label: str
    pipeline: PipelineConfig


@dataclass
class RunResult:
    label: str
    tenant_id: str
    config: PipelineConfig
    speakers: list[SpeakerFigures]
    aggregates: dict[str, Any]
    prior_nights: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    generation_sweep: list[dict[str, float | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label, "tenant_id": self.tenant_id,
            "train": self.config.train.as_provenance(),
            "personal_train": self.config.personal_train.as_provenance(),
            "personal_overrides": dict(self.config.personal_overrides),
            "gate": self.config.gate.as_provenance(),
            "holdout_k": self.config.holdout_k, "seed": self.config.seed,
            "speakers": [s.to_json() for s in self.speakers], **self.aggregates,
            "prior_nights": self.prior_nights,
            "generation_sweep": self.generation_sweep,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def _prior_night(night: NightRecord) -> dict[str, Any]:
    mine = night.outcomes_of(PRIOR_USER_ID)
    return {"night": night.night, "outcome": mine[-1].outcome if mine else "-",
            "train_seconds": round(sum(o.seconds.get("train", 0.0) for o in mine), 2),
            "night_seconds": round(night.seconds, 2),
            "reasons": list(mine[-1].reasons) if mine else []}


def _measure_speakers(
    design: StudyDesign, result: Replay, pipeline: RevisionPipeline, tenant_id: str, *,
    label: str, engine: Engine, adapters: AdapterStore, max_length: int,
    generation: GenerationConfig, progress: bool,
) -> tuple[list[SpeakerFigures], list[dict[str, float | None]], float, float]:
    """Every speaker's figures (the from-base ablation trained on the way), the style
    aggregates at the sweep's other repetition penalties and extrapolation strengths, and
    the seconds spent on the ablation and on measuring."""
    measurer = Measurer(engine, adapters, max_length=max_length)
    replies = Replies(engine.model, engine.tokenizer, adapters, generation)
    classifier = fit_classifier(design, seed=pipeline.config.seed)
    general = examples_of(design.general, "general")
    scratch = Path(tempfile.mkdtemp(prefix="tessera-study-"))
    figures: list[SpeakerFigures] = []
    served: list[ServedDigests] = []
    ablation_s = measure_s = 0.0
    try:
        for speaker in tqdm(design.speakers, desc=f"  {label}: measure", unit="speaker",
                            disable=not progress, leave=False):
            t0 = time.perf_counter()
            ablation = train_from_base(pipeline, tenant_id, speaker.speaker_id,
                                       scratch / speaker.speaker_id)
            t1 = time.perf_counter()
            test = examples_of(speaker.test, speaker.speaker_id)
            nll = speaker_figures(
                measurer, result, speaker_id=speaker.speaker_id,
                n_train=len(speaker.history), test=test, general=general,
                from_base=ablation.blob, from_base_seconds=ablation.seconds,
            )
            digests = ServedDigests(
                speaker.speaker_id, test, shared=result.nights[-1].prior.adapter_digest,
                served=result.nights[-1].served[speaker.speaker_id].adapter_digest)
            style = style_figures(replies, classifier, speaker_id=digests.speaker_id,
                                  test=test, shared=digests.shared, served=digests.served)
            figures.append(dataclasses.replace(nll, style=style))
            served.append(digests)
            ablation_s += t1 - t0
            measure_s += time.perf_counter() - t1
        t2 = time.perf_counter()
        sweep = penalty_sweep(replies, classifier, served, generation.sweep_penalties)
        sweep += extrapolation_sweep(replies, classifier, measurer, adapters, served,
                                     generation.extrapolations)
        measure_s += time.perf_counter() - t2
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return figures, sweep, ablation_s, measure_s


def run_arm(
    design: StudyDesign,
    arm: StudyConfig,
    *,
    engine: Engine,
    adapters: AdapterStore,
    database_url: str,
    ingest: Ingest,
    tenant_id: str,
    schedule: ScheduleConfig = STUDY_SCHEDULE,
    generation: GenerationConfig = DEFAULT_GENERATION,
    progress: bool = False,
) -> RunResult:
    seconds: dict[str, float] = {}
    store = PostgresEventStore(database_url)
    try:
        pipeline = RevisionPipeline(store, adapters, engine, arm.pipeline)
        started = time.perf_counter()
        bar = tqdm(total=design.days, desc=f"  {arm.label}: nights", unit="night",
                   disable=not progress, leave=False)
        result = replay(design, tenant_id=tenant_id, ingest=ingest, pipeline=pipeline,
                        database_url=database_url, schedule=schedule,
                        on_night=lambda _: bar.update(1))
        bar.close()
        seconds["ingest"] = result.ingest_seconds
        seconds["nights"] = time.perf_counter() - started - result.ingest_seconds

        figures, sweep, ablation_s, measure_s = _measure_speakers(
            design, result, pipeline, tenant_id, label=arm.label, engine=engine,
            adapters=adapters, max_length=arm.pipeline.eval_max_length,
            generation=generation, progress=progress)
        seconds["from_base"], seconds["measure"] = ablation_s, measure_s
    finally:
        store.close()
    return RunResult(arm.label, tenant_id, arm.pipeline, figures, aggregates(figures),
                     [_prior_night(n) for n in result.nights], seconds, sweep)


def run_study(
    design: StudyDesign,
    arms: Sequence[StudyConfig],
    *,
    engine: Engine,
    adapters: AdapterStore,
    database_url: str,
    ingest: Ingest,
    tenant_prefix: str,
    generation: GenerationConfig = DEFAULT_GENERATION,
    progress: bool = False,
) -> tuple[list[RunResult], dict[str, Any]]:
    """Every arm in its own tenant `<tenant_prefix>-<label>`; the document's top-level
    `speakers` and aggregates are the first arm's, `runs` has every arm."""
    if not arms:
        raise ValueError("a study needs at least one configuration")
    started = time.perf_counter()
    runs = [
        run_arm(design, arm, engine=engine, adapters=adapters, database_url=database_url,
                ingest=ingest, tenant_id=f"{tenant_prefix}-{arm.label}"[:64],
                generation=generation, progress=progress)
        for arm in arms
    ]
    first = runs[0].to_json()
    document = {
        "study": "personalization",
        "base_model": {"model_id": engine.base.model_id, "digest": engine.base.digest},
        "design": design.params(),
        "generation": generation.as_json(),
        "label": first["label"],
        "speakers": first["speakers"],
        **{k: v for k, v in first.items() if k not in ("speakers", "label")},
        "runs": [r.to_json() for r in runs],
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    return runs, document
