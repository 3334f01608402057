"""`tessera demo` run twice against the same stack: each run tells the whole story in its
own fresh tenants (events new to the log, nights that train), on the tiny model."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tessera.infra.stack import StackInfo

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TESSERA = Path(sys.executable).with_name("tessera")


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.bench.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


def _demo_env(tmp_path: Path, database_url: str, stack: StackInfo, model: Path) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    env.update({
        "TESSERA_STATE_DIR": str(tmp_path / "state"),
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_BASE_MODEL": str(model),
        # Own topics and consumer group on the shared test broker.
        "TESSERA_TOPIC_INTERACTIONS": f"demo-{suffix}",
        "TESSERA_TOPIC_INTERACTIONS_DLQ": f"demo-{suffix}.dlq",
        "TESSERA_TOPIC_REVISIONS": f"demo-{suffix}.revisions",
        "TESSERA_STREAM_GROUP": f"demo-{suffix}",
        "TESSERA_TOPIC_PARTITIONS": "2",
        "OMP_NUM_THREADS": "1",
    })
    return env


def test_a_second_demo_on_the_same_stack_tells_the_whole_story_again(
    stack: StackInfo, database_url: str, tiny_model_dir: Path, tmp_path: Path
) -> None:
    env = _demo_env(tmp_path, database_url, stack, tiny_model_dir)
    args = [str(TESSERA), "demo", "--users", "2", "--messages", "20", "--train-users", "2",
            "--days", "2", "--train-messages", "40"]
    tenants = []
    for attempt in (1, 2):
        proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=900,
                              check=False)
        assert proc.returncode == 0, f"run {attempt}: {proc.stderr[-4000:]}"
        out = proc.stdout
        tenant = re.search(r"tenant '(demo-[0-9]{6}-[0-9]{6}-[0-9a-f]{4})' \(this run's\)", out)
        assert tenant is not None, out[-3000:]
        tenants.append(tenant.group(1))
        # The ingest act's tenant holds exactly this run's 40 events.
        assert f"tenant {tenant.group(1)}: 40 events from 2 users" in out
        # Both nights get new events (20 a user a night) and train something.
        assert "day 1: 40 new events from 2 users; nightly job" in out, out[-3000:]
        assert "day 2: 40 new events from 2 users; nightly job" in out
        assert "already in the log" not in out
        assert "nobody has enough new events tonight" not in out
        decided = re.search(r"2 nights: (\d+) revisions promoted, (\d+) rejected", out)
        assert decided is not None and int(decided[1]) + int(decided[2]) > 0, out[-3000:]
    assert tenants[0] != tenants[1]
