"""The training benchmark: N users x M real events -> one revision each, timed by stage.

Each user is a chitchat speaker (real conversations; see `workers.chitchat`). For every
user: build the dataset (dataset), train a LoRA from the base (train), measure candidate
and baseline and decide (evaluate), put the blob into a content-addressed store (store).
The baseline here is the base model. A long-running trainer measures the base on the
regression set and canaries once (at start-up) and caches it; the benchmark does the same
before timing (`baseline_warmup_seconds`), so the per-revision figures are steady-state.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tessera.events.store import StoredEvent
from tessera.schemas.events import EventEnvelope, EventType
from tessera.schemas.settings import Settings
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.base_model import load_base_model, resolve_base_model
from tessera.workers.dataset import build_dataset
from tessera.workers.evaluator import MetricsCache, evaluate
from tessera.workers.gate import GateConfig, decide
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.regression_set import load_regression_set
from tessera.workers.trainer import train_adapter

STAGES = ("dataset", "train", "evaluate", "store")
_TYPES = {"exchange": EventType.EXCHANGE, "text": EventType.TEXT}
_PAYLOAD_KEYS = {"exchange": ("prompt", "response", "context"), "text": ("text", "context")}


@dataclass(frozen=True, slots=True)
class BenchConfig:
    users: int
    events_per_user: int
    holdout_k: int
    lora: LoraTrainConfig
    seed: int = 0


def speaker_events(users: int, events_per_user: int, *, seed: int = 0) -> list[list[StoredEvent]]:
    """`users` chitchat speakers' first `events_per_user` turns as stored events."""
    from tessera.bench.chitchat import load_speakers

    speakers = load_speakers(min_messages=events_per_user, limit=users, seed=seed,
                             max_context_turns=2, max_chars=2000)
    if len(speakers) < users:
        raise ValueError(f"only {len(speakers)} speakers have >= {events_per_user} messages")
    streams, position = [], 0
    for index, speaker in enumerate(speakers):
        user_id = f"bench-{index}"
        stream = []
        for version, message in enumerate(speaker.messages[:events_per_user], start=1):
            item = message.as_ingest_item(user_id)
            kind = item["type"]
            data = {key: item[key] for key in _PAYLOAD_KEYS[kind]}  # the envelope has the rest
            position += 1
            env = EventEnvelope(
                event_id=uuid.UUID(int=position), event_type=_TYPES[kind], tenant_id="bench",
                user_id=user_id, occurred_at=message.occurred_at.astimezone(UTC), data=data,
                recorded_at=datetime.now(UTC),
            )
            stream.append(StoredEvent(position=position, stream_version=version, envelope=env))
        streams.append(stream)
    return streams


def run_train_bench(
    config: BenchConfig,
    *,
    settings: Settings,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return its JSON-ready report."""
    import torch

    info = resolve_base_model(settings)
    model, tokenizer = load_base_model(info)
    regression = load_regression_set()
    gate = GateConfig.model_validate(settings.gate_overrides)  # as the trainers decide
    cache = MetricsCache()
    streams = speaker_events(config.users, config.events_per_user, seed=config.seed)
    warm_start = time.perf_counter()
    evaluate(model, tokenizer, adapter=None, heldout=(), regression=regression,
             max_length=config.lora.max_length, cache=cache)
    warmup = time.perf_counter() - warm_start
    totals = dict.fromkeys(STAGES, 0.0)
    # CPU seconds of this process (all torch threads) per stage, beside the wall clock: on
    # a machine shared with other jobs the wall clock of one stage swings several-fold
    # with their load, CPU time much less, so the CPU split is the steadier share.
    cpu_totals = dict.fromkeys(STAGES, 0.0)
    decisions, adapter_bytes = [], 0
    with tempfile.TemporaryDirectory(prefix="tessera-bench-") as tmp:
        store = LocalAdapterStore(Path(tmp) / "store")
        for index, stream in enumerate(streams):
            t0, c0 = time.perf_counter(), time.process_time()
            split = build_dataset(stream, holdout_k=config.holdout_k)
            t1, c1 = time.perf_counter(), time.process_time()
            result = train_adapter(model, tokenizer, split.train, config=config.lora,
                                   base_digest=info.digest, out_dir=Path(tmp) / f"u{index}",
                                   progress=progress is not None)
            t2, c2 = time.perf_counter(), time.process_time()
            baseline = evaluate(model, tokenizer, adapter=None, heldout=split.heldout,
                                regression=regression, max_length=config.lora.max_length,
                                cache=cache)
            t_base = time.perf_counter()
            candidate = evaluate(model, tokenizer, adapter=result.blob_path,
                                 heldout=split.heldout, regression=regression,
                                 max_length=config.lora.max_length, cache=cache)
            decision = decide(candidate, baseline, gate)
            t3, c3 = time.perf_counter(), time.process_time()
            digest = store.put_file(result.blob_path)
            t4, c4 = time.perf_counter(), time.process_time()
            adapter_bytes = store.path(digest).stat().st_size
            seconds = dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))
            cpu = dict(zip(STAGES, (c1 - c0, c2 - c1, c3 - c2, c4 - c3), strict=True))
            for stage in STAGES:
                totals[stage] += seconds[stage]
                cpu_totals[stage] += cpu[stage]
            decisions.append({
                "user": stream[0].envelope.user_id, "train_examples": len(split.train),
                "heldout": len(split.heldout), "steps": result.steps,
                "train_loss": round(result.train_loss, 4),
                "baseline_user_nll": round(baseline.user_nll, 4),
                "candidate_user_nll": round(candidate.user_nll, 4),
                "regression_change": round(decision.regression_change, 4),
                "adapter_norm": round(candidate.adapter_norm, 4),
                "promote": decision.promote,
                "reasons": decision.reasons,
                "seconds": {stage: round(value, 3) for stage, value in seconds.items()},
                "cpu_seconds": {stage: round(value, 3) for stage, value in cpu.items()},
                # The baseline's regression set and canaries are cached: only its
                # held-out NLL is measured per user; the candidate needs everything.
                "evaluate_seconds": {"baseline": round(t_base - t2, 3),
                                     "candidate": round(t3 - t_base, 3)},
            })
            if progress is not None:
                progress(f"user {index + 1}/{len(streams)}: promote={decision.promote} "
                         f"{t4 - t0:.1f}s")
    n = len(streams)
    per_revision = {stage: round(totals[stage] / n, 3) for stage in STAGES}
    revision_s = sum(totals.values()) / n
    return {
        "bench": "train",
        "model_id": info.model_id,
        "base_digest": info.digest,
        "users": config.users,
        "events_per_user": config.events_per_user,
        "holdout_k": config.holdout_k,
        "gate": gate.as_provenance(),
        "regression_set": {"version": regression.version, "digest": regression.digest,
                           "examples": len(regression.examples),
                           "canaries": len(regression.canary_prompts)},
        "lora": config.lora.as_provenance(),
        "revisions_per_hour": round(3600.0 / revision_s, 2),
        "seconds_per_revision": per_revision,
        "seconds_per_revision_total": round(revision_s, 3),
        "evaluate_share": round(totals["evaluate"] / sum(totals.values()), 4),
        "cpu_seconds_per_revision": {stage: round(cpu_totals[stage] / n, 3) for stage in STAGES},
        "evaluate_share_cpu": round(cpu_totals["evaluate"] / sum(cpu_totals.values()), 4),
        "baseline_warmup_seconds": round(warmup, 3),
        "adapter_bytes": adapter_bytes,
        "base_bytes": info.n_bytes,
        "adapter_to_base_ratio": round(adapter_bytes / info.n_bytes, 6),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "promoted": sum(1 for d in decisions if d["promote"]),
        "per_user": decisions,
    }
