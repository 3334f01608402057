"""Fixtures for worker tests: a tiny random Llama (built once per session) and events.

Other worker tests may use these too: `tiny_model_dir`, `tiny` (model, tokenizer),
`make_events` (a builder of StoredEvent streams).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tessera.events.store import StoredEvent
from tessera.schemas.events import EventEnvelope

from .event_specs import EventSpec


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.bench.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny(tiny_model_dir: Path) -> Iterator[tuple[Any, Any]]:
    """(model, tokenizer), loaded through the same path as the real base model."""
    import torch

    from tessera.workers.base_model import BaseModelInfo, load_base_model

    torch.set_num_threads(1)  # two cores shared by many test processes
    info = BaseModelInfo(tiny_model_dir, "tiny", "0" * 64, 0)
    yield load_base_model(info)




@pytest.fixture()
def make_events() -> Callable[..., list[StoredEvent]]:
    """Build a stored stream from (event_type, data) pairs, positions start+1, start+2, ..."""

    def build(specs: list[EventSpec], *, user: str = "alice", start: int = 0,
              ids: list[uuid.UUID] | None = None) -> list[StoredEvent]:
        out = []
        for i, (event_type, data) in enumerate(specs):
            env = EventEnvelope(
                event_id=ids[i] if ids else uuid.uuid4(), event_type=event_type,
                tenant_id="acme", user_id=user, occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
                data=data,
            )
            out.append(StoredEvent(position=start + i + 1, stream_version=i + 1, envelope=env))
        return out

    return build
