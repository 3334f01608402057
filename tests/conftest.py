"""Shared fixtures: one real local stack (Tansu + PostgreSQL) per test session.

Each test that needs a database gets a fresh, migrated one, so tests never see each
other's rows; the broker is shared and tests use unique topic names or groups.
"""

from __future__ import annotations

import os

# Triton decides at decoration time whether a kernel is compiled or interpreted, so
# TRITON_INTERPRET must be set before anything imports `tessera.kernels.triton_sgmv`:
# here, the first conftest collected, since bench tests (collected before tests/kernels)
# import it too. CPU runs interpret; bf16 `tl.dot` is wrong there, so kernels upcast.
os.environ.setdefault("TRITON_INTERPRET", "1")
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tessera.infra.stack import LocalStack, StackInfo


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackInfo]:
    local = LocalStack(
        tmp_path_factory.mktemp("stack"),
        database_url=os.environ.get("TESSERA_TEST_DATABASE_URL"),
        kafka_bootstrap=os.environ.get("TESSERA_TEST_KAFKA_BOOTSTRAP"),
    )
    info = local.up()
    yield info
    local.down()


@pytest.fixture(scope="session")
def local_stack(stack: StackInfo, tmp_path_factory: pytest.TempPathFactory) -> LocalStack:
    """The LocalStack object behind `stack`, for tests that kill or restart its parts."""
    base = Path(str(tmp_path_factory.getbasetemp()))
    (stack_dir,) = [
        p for p in base.iterdir() if p.name.startswith("stack") and not p.is_symlink()
    ]
    return LocalStack(stack_dir)


def _with_database(url: str, name: str) -> str:
    head, _, _ = url.rpartition("/")
    return f"{head}/{name}"


@pytest.fixture()
def database_url(stack: StackInfo) -> Iterator[str]:
    """A fresh database with all migrations applied, dropped after the test."""
    from tessera.events.migrate import migrate

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin_url = _with_database(stack.database_url, "postgres")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated identifier, safe
    url = _with_database(stack.database_url, name)
    migrate(url)
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
