"""The ablation the product does not ship: a personal adapter trained from the base model
alone, on everything the speaker sent (the same log events the system trained on), with
the same training configuration and seed as the system's revisions.

It answers "does the prior matter?": the service warm-starts personal revisions from the
tenant prior; this adapter never sees anyone else's data.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tessera.schemas.events import INTERACTION_TYPES
from tessera.workers.dataset import build_dataset
from tessera.workers.pipeline import RevisionPipeline

_INTERACTIONS = sorted(str(t) for t in INTERACTION_TYPES)


@dataclass(frozen=True, slots=True)
class AblationAdapter:
    user_id: str
    blob: Path
    n_train: int
    seconds: float


def train_from_base(
    pipeline: RevisionPipeline, tenant_id: str, user_id: str, out_dir: Path | None = None
) -> AblationAdapter:
    """Train `user_id`'s from-base adapter on all their interaction events in the log."""
    from tessera.workers.trainer import train_adapter

    events = pipeline.store.read(tenant_id=tenant_id, user_id=user_id, event_types=_INTERACTIONS)
    examples = build_dataset(events, holdout_k=0).train
    folder = out_dir or Path(tempfile.mkdtemp(prefix="tessera-study-ablation-"))
    started = time.perf_counter()
    engine = pipeline.engine
    result = train_adapter(
        engine.model, engine.tokenizer, examples, config=pipeline.config.train,
        base_digest=engine.base.digest, init_adapter=None, seed=pipeline.config.seed,
        out_dir=folder,
    )
    return AblationAdapter(user_id, result.blob_path, len(examples),
                           time.perf_counter() - started)
