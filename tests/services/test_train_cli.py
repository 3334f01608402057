"""`tessera train USER` as an operator runs it: a child process on the test broker and
database, the tiny Llama as base model.

- without `--local`, the request lands on the training-requests topic, keyed `tenant/user`,
  for the user's head position, trigger "manual", and is remembered in
  `scheduler_requests` (so the nightly job does not ask for it again);
- with `--local`, the revision is trained, gated and recorded in this process, with the
  operator's gate settings in its provenance;
- an unknown user or tenant, or `--wait` with no trainer running, is a clear error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from kafka import KafkaConsumer, TopicPartition

from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventEnvelope, EventType
from tessera.workers.revision_events import revision_id_for
from tessera.workers.training_request import TrainingRequest

pytestmark = [pytest.mark.integration]

TESSERA = Path(sys.executable).with_name("tessera")
TENANT = "acme"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.bench.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture()
def env(stack: StackInfo, database_url: str, tiny_base: Path, tmp_path: Path) -> dict[str, str]:
    """The child's environment: test stack, own topics, tiny model, small-scale gate."""
    suffix = uuid.uuid4().hex[:8]
    out = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    out.update({
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_STATE_DIR": str(tmp_path / "state"),
        "TESSERA_BASE_MODEL": str(tiny_base),
        "TESSERA_TOPIC_TRAINING_REQUESTS": f"test.train-cli.{suffix}",
        "TESSERA_TOPIC_REVISIONS": f"test.revisions-cli.{suffix}",
        "TESSERA_TRAIN_OVERRIDES": json.dumps({"rank": 4, "alpha": 8, "epochs": 1,
                                               "batch_size": 4, "max_length": 48}),
        "TESSERA_HOLDOUT_K": "4",
        "TESSERA_MIN_TRAIN_EXAMPLES": "4",
        # 4 held out per user at this size: the gate must be told it may decide on 4.
        "TESSERA_GATE_OVERRIDES": json.dumps({"min_heldout_examples": 4}),
        "OMP_NUM_THREADS": "1",
    })
    return out


def _append_exchanges(database_url: str, user: str, n: int) -> int:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    events = [
        EventEnvelope(event_type=EventType.EXCHANGE, tenant_id=TENANT, user_id=user,
                      occurred_at=start + timedelta(minutes=i),
                      data={"prompt": f"What is the plan for day {i}?",
                            "response": "sure thing, see you at noon!"})
        for i in range(n)
    ]
    with PostgresEventStore(database_url) as store:
        return store.append(events)[-1].position


def _tessera(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TESSERA), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _requests_on(bootstrap: str, topic: str, timeout_s: float = 30.0) -> list[tuple[bytes, bytes]]:
    """Every record on `topic` (all partitions, from the start) as (key, value)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="earliest")
    try:
        deadline = time.monotonic() + timeout_s
        parts = consumer.partitions_for_topic(topic)
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = consumer.partitions_for_topic(topic)
        out: list[tuple[bytes, bytes]] = []
        if not parts:
            return out  # the topic was never created: nothing was sent
        consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        consumer.seek_to_beginning()
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                out += [(r.key, r.value) for r in records]
            if out:  # one CLI call sends one request, flushed before it exits
                break
        return out
    finally:
        consumer.close()


def _recorded_requests(database_url: str) -> list[tuple[str, str, int, str]]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT tenant_id, user_id, up_to_position, trigger"
                            " FROM scheduler_requests ORDER BY up_to_position").fetchall()
    return [(str(t), str(u), int(p), str(trig)) for t, u, p, trig in rows]


def test_request_lands_on_the_training_requests_topic(
    env: dict[str, str], database_url: str, stack: StackInfo
) -> None:
    _append_exchanges(database_url, "bob", 3)  # another user: not the head we ask for
    head = _append_exchanges(database_url, "alice", 6)
    _append_exchanges(database_url, "bob", 2)

    proc = _tessera(env, "train", "alice", "--tenant", TENANT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"requested a revision of {TENANT}/alice up to position {head}" in proc.stdout

    records = _requests_on(stack.kafka_bootstrap, env["TESSERA_TOPIC_TRAINING_REQUESTS"])
    assert len(records) == 1
    key, value = records[0]
    assert key == f"{TENANT}/alice".encode()
    request = TrainingRequest.decode(value)
    assert (request.tenant_id, request.user_id, request.up_to_position, request.trigger) == (
        TENANT, "alice", head, "manual")
    assert _recorded_requests(database_url) == [(TENANT, "alice", head, "manual")]


def test_local_trains_gates_and_records_the_revision(
    env: dict[str, str], database_url: str
) -> None:
    head = _append_exchanges(database_url, "carol", 12)

    proc = _tessera(env, "train", "carol", "--tenant", TENANT, "--local")
    assert proc.returncode == 0, proc.stderr[-3000:]
    revision_id = revision_id_for(TENANT, "carol", head)
    first = proc.stdout.strip().splitlines()[0]
    assert first in (f"promoted: {revision_id}", f"rejected: {revision_id}"), proc.stdout

    with PostgresEventStore(database_url) as store:
        row = store.get_revision(revision_id)
    assert row is not None
    assert row.state == first.split(":")[0]
    assert (row.dataset_from, row.dataset_to) == (1, head)
    assert row.provenance["trigger"] == "manual"
    assert row.provenance["heldout_positions"] == list(range(head - 3, head + 1))
    assert row.provenance["hyperparameters"]["gate"]["min_heldout_examples"] == 4
    assert row.metrics["heldout_examples"] == 4.0
    # Every reason the CLI printed is the one recorded with the decision.
    assert [line.strip() for line in proc.stdout.strip().splitlines()[1:]] == row.reasons
    assert _recorded_requests(database_url) == [(TENANT, "carol", head, "manual")]

    # Asked again for the same position: nothing new is trained.
    again = _tessera(env, "train", "carol", "--tenant", TENANT, "--local")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith(f"skipped: {revision_id}")


@pytest.mark.parametrize(("user", "tenant"), [("nobody", TENANT), ("alice", "no-such-tenant")])
def test_unknown_user_or_tenant_is_a_clear_error_and_sends_nothing(
    env: dict[str, str], database_url: str, stack: StackInfo, user: str, tenant: str
) -> None:
    _append_exchanges(database_url, "alice", 3)

    proc = _tessera(env, "train", user, "--tenant", tenant, timeout=120)
    assert proc.returncode == 1
    assert f"error: no interaction events for {tenant}/{user}: nothing to train on" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _recorded_requests(database_url) == []
    assert _requests_on(stack.kafka_bootstrap, env["TESSERA_TOPIC_TRAINING_REQUESTS"],
                        timeout_s=3) == []


def test_wait_without_a_trainer_gives_up_with_a_hint(
    env: dict[str, str], database_url: str
) -> None:
    _append_exchanges(database_url, "alice", 3)

    proc = _tessera(env, "train", "alice", "--tenant", TENANT, "--wait", "--timeout-s", "2",
                    timeout=120)
    assert proc.returncode == 1
    assert "requested a revision" in proc.stdout
    assert "no decision within 2s (is `tessera worker train` running?)" in proc.stderr
