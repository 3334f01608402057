"""Fixtures for the revision pipeline, trainer worker and scheduler tests.

The tiny random Llama (`tiny_model_dir` from tests/workers/conftest.py) stands in for the
base model; the event log is the real PostgreSQL of tests/conftest.py; adapters go to a
real content-addressed store in a temp folder.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.events import EventEnvelope, EventType
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.base_model import BaseModelInfo, load_base_model, weight_files, weights_digest
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.pipeline import Engine, PipelineConfig, RevisionPipeline

TENANT = "acme"

# Each user has a recognisable way of answering; the prior learns the tenant's mix.
STYLES = {
    "alice": "sure thing, see you at noon!",
    "bob": "no way, I think we should go to the beach.",
    "carol": "hello friend, the capital of France is Paris.",
    "dave": "the quick brown fox jumps over the lazy dog.",
}
PROMPTS = [
    "What is the plan?", "How are you today?", "Where should we go?", "What do you think?",
    "Can we meet tomorrow?", "Any news?", "What is the capital of France?", "Ready?",
]


def tiny_train_config(**overrides: object) -> LoraTrainConfig:
    base: dict[str, object] = {"rank": 4, "alpha": 8.0, "epochs": 3, "batch_size": 8,
                               "lr": 5e-3, "max_length": 64, "dropout": 0.0}
    base.update(overrides)
    return LoraTrainConfig.model_validate(base)


def tiny_pipeline_config(**overrides: object) -> PipelineConfig:
    values: dict[str, object] = {
        "train": tiny_train_config(), "gate": GateConfig(min_gain=0.01, max_regression=0.5,
                                                           min_heldout_examples=4),
        "seed": 7, "holdout_k": 4, "min_train_examples": 4, "prior_eval_users": 4,
        "eval_max_length": 64, "canaries": True,
    }
    values.update(overrides)
    return PipelineConfig(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path) -> Engine:
    import torch

    torch.set_num_threads(1)  # deterministic reductions, and two cores shared by many
    files = weight_files(tiny_model_dir)
    info = BaseModelInfo(tiny_model_dir, "tiny-llama", weights_digest(files),
                         sum(f.stat().st_size for f in files))
    model, tokenizer = load_base_model(info)
    return Engine(info, model, tokenizer)


@pytest.fixture()
def pg_store(database_url: str) -> Iterator[PostgresEventStore]:
    store = PostgresEventStore(database_url)
    yield store
    store.close()


@pytest.fixture()
def adapters(tmp_path: Path) -> LocalAdapterStore:
    return LocalAdapterStore(tmp_path / "adapters")


@pytest.fixture()
def pipeline(
    pg_store: PostgresEventStore, adapters: LocalAdapterStore, engine: Engine
) -> RevisionPipeline:
    return RevisionPipeline(pg_store, adapters, engine, tiny_pipeline_config())


def exchanges(user: str, n: int, *, style: str | None = None, seed: int = 0,
              tenant: str = TENANT) -> list[EventEnvelope]:
    """`n` exchanges of `user` answering in their style (or in `style`)."""
    rng = random.Random(f"{user}/{seed}")
    answer = style if style is not None else STYLES[user]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        EventEnvelope(
            event_type=EventType.EXCHANGE, tenant_id=tenant, user_id=user,
            occurred_at=start + timedelta(minutes=i),
            data={"prompt": rng.choice(PROMPTS), "response": answer},
        )
        for i in range(n)
    ]


def garbage(user: str, n: int, *, seed: int = 0, tenant: str = TENANT) -> list[EventEnvelope]:
    """Poison: `n` exchanges whose responses are one token spammed, the adversarial kind
    that teaches a model to loop."""
    rng = random.Random(f"poison/{user}/{seed}")
    start = datetime(2026, 2, 1, tzinfo=UTC)
    return [
        EventEnvelope(
            event_type=EventType.EXCHANGE, tenant_id=tenant, user_id=user,
            occurred_at=start + timedelta(minutes=i),
            data={"prompt": rng.choice(PROMPTS), "response": " ".join(["lol"] * 40)},
            event_id=uuid.uuid4(),
        )
        for i in range(n)
    ]
