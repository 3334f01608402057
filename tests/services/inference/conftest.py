"""Fixtures: a tiny served model with three personal adapters and a switchable lookup."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from torch import nn

from tessera.schemas.settings import Settings
from tessera.services.inference.build import build_engine
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.revisions import BASE, Served

from .helpers import DirStore, byte_tokenizer, make_peft, save_blob, tiny_model

TARGETS = ["q_proj", "v_proj", "down_proj"]


@dataclass
class Served3:
    """Three users with personal adapters; `table` is what the projection says now."""

    base: nn.Module
    peft: dict[str, nn.Module]
    digests: dict[str, str]
    store: DirStore
    table: dict[tuple[str, str], Served] = field(default_factory=dict)

    def lookup(self, tenant: str, user: str) -> Served:
        return self.table.get((tenant, user), BASE)


@pytest.fixture()
def served3(tmp_path: Path) -> Served3:
    base = tiny_model()
    peft, digests = {}, {}
    for i, user in enumerate(["ann", "bob", "cyd"]):
        pm = make_peft(base, 10 + i, r=4, alpha=8, targets=TARGETS)
        _, digest = save_blob(pm, tmp_path / "blobs", r=4, alpha=8, targets=TARGETS)
        peft[user], digests[user] = pm, digest
    s = Served3(base, peft, digests, DirStore(tmp_path / "blobs"))
    for user, digest in digests.items():
        s.table[("t1", user)] = Served(f"rev-{user}-1", digest, "personal")
    return s


def engine_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "inference_device_slots": 4,
        "inference_max_rank": 4,
        "inference_cpu_adapters": 8,
        "inference_target_modules": TARGETS,
        "inference_max_batch": 8,
        "inference_queue_size": 16,
        "inference_request_timeout_s": 30.0,
        "inference_max_tokens": 64,
        "inference_revision_cache_s": 60.0,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture()
def engine(served3: Served3) -> Iterator[InferenceEngine]:
    eng = build_engine(
        copy.deepcopy(served3.base),
        byte_tokenizer(),
        served3.store,
        served3.lookup,
        settings=engine_settings(),
    ).start()
    yield eng
    eng.stop()
