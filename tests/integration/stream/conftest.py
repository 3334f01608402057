"""Fixtures for the stream worker tests. Every test gets its own topics and consumer
group, so runs never see each other's records or offsets on the shared broker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.events.kafka import ensure_topics
from tessera.infra.stack import LocalStack, StackInfo

from .support import StreamEnv, Worker


@pytest.fixture()
def stream_env(stack: StackInfo, database_url: str, tmp_path: Path) -> StreamEnv:
    tag = uuid.uuid4().hex[:10]
    env = StreamEnv(
        bootstrap=stack.kafka_bootstrap,
        database_url=database_url,
        state_dir=tmp_path / "state",
        topic=f"test-{tag}.interactions",
        dlq=f"test-{tag}.interactions.dlq",
        group=f"test-ingest-{tag}",
    )
    env.state_dir.mkdir()
    ensure_topics(env.bootstrap, env.settings())
    return env


@pytest.fixture()
def worker(stream_env: StreamEnv) -> Iterator[Worker]:
    w = Worker(stream_env)
    yield w
    w.stop()


@pytest.fixture(scope="session")
def local_stack(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> LocalStack:
    """The LocalStack behind `stack`. Overrides the root conftest's fixture, whose lookup
    also matches the `stackcurrent` symlink that recent pytest versions create next to
    `stack0`, and so fails to unpack."""
    base = Path(str(tmp_path_factory.getbasetemp()))
    (stack_dir,) = [p for p in base.iterdir() if p.name.startswith("stack") and not p.is_symlink()]
    return LocalStack(stack_dir)
