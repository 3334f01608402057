"""Fixtures: one real deployment (serve + ingest worker, tiny model) per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fuzz.served import Deployment, deployment

from tessera.infra.stack import StackInfo


@pytest.fixture(scope="session")
def served(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployment(stack, tmp_path_factory.mktemp("security-deployment")) as dep:
        yield dep
