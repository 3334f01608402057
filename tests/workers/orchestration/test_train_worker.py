"""`kill -9` of a trainer mid-training: another member of the group takes the request
over and exactly one revision results, whose blob is in the store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tessera.events.kafka import ensure_topics
from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventType
from tessera.schemas.settings import Settings
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.train_worker import send_requests
from tessera.workers.training_request import TrainingRequest

from .conftest import TENANT, exchanges

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TESSERA = Path(sys.executable).with_name("tessera")


class Worker:
    """One `tessera worker train` process with its log in a file."""

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.log_path = folder / f"{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [str(TESSERA), "worker", "train", "--max-requests", "1"],
            env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def lines(self) -> list[dict[str, object]]:
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

    def saw(self, text: str) -> bool:
        return any(text in str(rec.get("msg", "")) for rec in self.lines())

    def owns_partition(self) -> bool:
        assigned = [r for r in self.lines()
                    if str(r.get("msg", "")).startswith("partitions assigned")]
        return bool(assigned) and assigned[-1].get("assigned") == 1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)
        self._log.close()


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


@pytest.fixture()
def worker_env(database_url: str, stack: StackInfo, tiny_model_dir: Path,
               tmp_path: Path) -> Iterator[dict[str, str]]:
    suffix = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_BASE_MODEL": str(tiny_model_dir),
        "TESSERA_STATE_DIR": str(tmp_path / "state"),
        "TESSERA_TOPIC_TRAINING_REQUESTS": f"test.train.{suffix}",
        "TESSERA_TOPIC_REVISIONS": f"test.revisions.{suffix}",
        "TESSERA_TOPIC_PARTITIONS": "1",  # both members compete for the one partition
        "TESSERA_TRAIN_GROUP": f"trainers-{suffix}",
        # Long enough to be killed in the middle of it: ~7 s on a quiet 2-core machine
        # (20 epochs took 1.4 s, under the kill's 1 s wait plus the log polling).
        "TESSERA_TRAIN_OVERRIDES": json.dumps({"rank": 4, "alpha": 8, "epochs": 100,
                                               "batch_size": 4, "max_length": 48}),
        "TESSERA_HOLDOUT_K": "4",
        "TESSERA_MIN_TRAIN_EXAMPLES": "4",
        "OMP_NUM_THREADS": "1",
    }
    settings = Settings(topic_training_requests=env["TESSERA_TOPIC_TRAINING_REQUESTS"],
                        topic_revisions=env["TESSERA_TOPIC_REVISIONS"], topic_partitions=1)
    ensure_topics(stack.kafka_bootstrap, settings)
    yield env


@pytest.mark.timeout(1500)
def test_killed_trainer_request_is_taken_over_and_yields_one_revision(
    worker_env: dict[str, str], database_url: str, tmp_path: Path,
) -> None:
    with PostgresEventStore(database_url) as store:
        store.append(exchanges("alice", 30))
        up_to = store.head_position()
    workers = [Worker(name, worker_env, tmp_path) for name in ("a", "b")]
    try:
        _wait(lambda: all(w.saw("partitions assigned") for w in workers)
              and any(w.owns_partition() for w in workers), 300, "both trainers to join")
        request = TrainingRequest(tenant_id=TENANT, user_id="alice", up_to_position=up_to,
                                  trigger="test")
        send_requests(worker_env["TESSERA_KAFKA_BOOTSTRAP"],
                      worker_env["TESSERA_TOPIC_TRAINING_REQUESTS"], [request])
        _wait(lambda: any(w.saw("training started") for w in workers), 180, "training to start")
        (victim,) = [w for w in workers if w.saw("training started")]
        (survivor,) = [w for w in workers if w is not victim]
        time.sleep(1.0)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)

        with PostgresEventStore(database_url) as store:
            assert store.list_revisions(TENANT, "alice") == []  # killed before recording

        survivor.proc.wait(480)  # --max-requests 1: exits once it handled the request
        assert survivor.proc.returncode == 0, survivor.log_path.read_text()[-2000:]
        assert survivor.saw("training started")
    finally:
        for w in workers:
            w.stop()

    with PostgresEventStore(database_url) as store:
        revisions = store.list_revisions(TENANT, "alice")
        trained = store.read(tenant_id=TENANT, user_id="alice",
                             event_types=[EventType.REVISION_TRAINED])
    assert len(revisions) == 1 and len(trained) == 1
    (revision,) = revisions
    assert revision.state in ("promoted", "rejected") and revision.dataset_to == up_to
    adapters = LocalAdapterStore(Path(worker_env["TESSERA_STATE_DIR"]) / "adapters")
    assert adapters.path(revision.adapter_digest).is_file()  # verified on read
