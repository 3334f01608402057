"""Fixtures of the study tests: two synthetic speakers with recognisable styles, the tiny
random Llama as the base model, the real ingest processes on the test broker."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tessera.bench.chitchat import ContextTurn, Speaker, SpeakerMessage
from tessera.bench.commands.study import HttpIngest, running_ingest
from tessera.infra.stack import StackInfo
from tessera.workers.base_model import BaseModelInfo, load_base_model, weight_files, weights_digest
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.pipeline import Engine, PipelineConfig

PROMPTS = ["What is the plan?", "How are you today?", "Where should we go?",
           "What do you think?", "Can we meet tomorrow?", "Any news?"]
STYLES = {"alice": "sure thing, see you at noon!",
          "bob": "no way, I think we should go to the beach."}


def synthetic_speaker(name: str, n: int) -> Speaker:
    """`n` messages, one a minute, each answering a prompt in `name`'s style."""
    rng = random.Random(name)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    messages = tuple(
        SpeakerMessage(
            conversation_id=f"{name}-{i // 4}", turn_index=i % 4,
            occurred_at=start + timedelta(minutes=i),
            text=STYLES[name], prompt=rng.choice(PROMPTS),
            context=(ContextTurn("other", "Hello there."),) if i % 2 else (),
        )
        for i in range(n)
    )
    return Speaker(name, messages)


def general_set() -> list[SpeakerMessage]:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    return [SpeakerMessage("g", i, start + timedelta(minutes=i), "The weather is nice today.",
                           PROMPTS[i % len(PROMPTS)], ()) for i in range(6)]


def tiny_study_config(rank: int = 4) -> PipelineConfig:
    train = LoraTrainConfig(rank=rank, alpha=2.0 * rank, epochs=4, batch_size=8, lr=2e-2,
                            max_length=64, dropout=0.0)
    # A random tiny model's canaries are gibberish that may repeat a 3-gram by chance;
    # the repetition canary is for real models (tested in tests/workers), so not here.
    gate = GateConfig(min_gain=0.01, max_regression=0.5, min_heldout_examples=3,
                      max_canary_repeats=64)
    return PipelineConfig(train=train, gate=gate,
                          seed=7, holdout_k=3, min_train_examples=4, prior_eval_users=2,
                          eval_max_length=64)


@pytest.fixture(scope="session")
def study_engine(tiny_model_dir: Path) -> Engine:
    import torch

    torch.set_num_threads(1)  # two cores shared by many test processes
    files = weight_files(tiny_model_dir)
    info = BaseModelInfo(tiny_model_dir, "tiny-llama", weights_digest(files),
                         sum(f.stat().st_size for f in files))
    model, tokenizer = load_base_model(info)
    return Engine(info, model, tokenizer)


def child_env(tmp_path: Path) -> dict[str, str]:
    """Own topics and consumer group on the shared test broker, own state folder."""
    suffix = uuid.uuid4().hex[:8]
    return {
        "TESSERA_STATE_DIR": str(tmp_path / "state"),
        "TESSERA_TOPIC_INTERACTIONS": f"study-{suffix}",
        "TESSERA_TOPIC_INTERACTIONS_DLQ": f"study-{suffix}.dlq",
        "TESSERA_STREAM_GROUP": f"study-{suffix}",
        "TESSERA_TOPIC_PARTITIONS": "2",
    }


@pytest.fixture()
def http_ingest(
    stack: StackInfo, database_url: str, tmp_path: Path
) -> Iterator[HttpIngest]:
    with running_ingest(database_url, stack.kafka_bootstrap, tmp_path / "logs",
                        env=child_env(tmp_path)) as ingest:
        yield ingest
