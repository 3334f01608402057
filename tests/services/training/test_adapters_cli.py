"""`tessera export` and `tessera import` as an operator runs them: child processes on the
test database and broker, the tiny Llama as base model (environment as for
tests/services/test_train_cli.py).

A revision trained for carol is exported as a peft folder, imported for dave and gated
on dave's events (`--local`), with its origin recorded; importing it again is a no-op; a
folder whose rank does not fit is refused with the reason and records nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventEnvelope, EventType
from tessera.workers.adapter_store import sha256_file
from tessera.workers.peft_format import CONFIG_FILE, WEIGHTS_FILE
from tessera.workers.revision_events import revision_id_for

pytestmark = [pytest.mark.integration]

TESSERA = Path(sys.executable).with_name("tessera")
TENANT = "acme"


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.bench.tiny_model import build_tiny_model

    folder: Path = build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
    return folder


@pytest.fixture()
def env(stack: StackInfo, database_url: str, tiny_base: Path, tmp_path: Path) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    out = {k: v for k, v in os.environ.items() if not k.startswith("TESSERA_")}
    out.update({
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": stack.kafka_bootstrap,
        "TESSERA_STATE_DIR": str(tmp_path / "state"),
        "TESSERA_BASE_MODEL": str(tiny_base),
        "TESSERA_TOPIC_TRAINING_REQUESTS": f"test.adapters-cli.{suffix}",
        "TESSERA_TOPIC_REVISIONS": f"test.adapters-cli-revisions.{suffix}",
        "TESSERA_TRAIN_OVERRIDES": json.dumps({"rank": 4, "alpha": 8, "epochs": 1,
                                               "batch_size": 4, "max_length": 48}),
        "TESSERA_HOLDOUT_K": "4",
        "TESSERA_MIN_TRAIN_EXAMPLES": "4",
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
        return int(store.append(events)[-1].position)


def _tessera(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TESSERA), *args], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_export_then_import_for_another_user(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    head = _append_exchanges(database_url, "carol", 12)
    _append_exchanges(database_url, "dave", 12)
    trained = _tessera(env, "train", "carol", "--tenant", TENANT, "--local")
    assert trained.returncode == 0, trained.stderr[-3000:]
    revision = revision_id_for(TENANT, "carol", head)

    out = tmp_path / "carol-peft"
    proc = _tessera(env, "export", revision, str(out), timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with PostgresEventStore(database_url) as store:
        row = store.get_revision(revision)
    assert row is not None
    assert sha256_file(out / WEIGHTS_FILE) == row.adapter_digest
    assert json.loads((out / CONFIG_FILE).read_text())["r"] == 4

    proc = _tessera(env, "import", str(out), "--tenant", TENANT, "--user", "dave", "--local")
    assert proc.returncode == 0, proc.stderr[-3000:]
    verdict, revision_id = proc.stdout.splitlines()[0].split(": ")
    assert verdict in ("promoted", "rejected") and revision_id.startswith("imp-")
    with PostgresEventStore(database_url) as store:
        imported = store.get_revision(revision_id)
    assert imported is not None and imported.user_id == "dave" and imported.state == verdict
    assert imported.reasons  # the gate's reasons, whichever way it went
    origin = imported.provenance["hyperparameters"]["origin"]
    assert origin["kind"] == "import" and origin["sha256"] == row.adapter_digest

    again = _tessera(env, "import", str(out), "--tenant", TENANT, "--user", "dave", "--local")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.startswith(f"skipped: {revision_id}")


def test_misfit_and_unknown_revision_are_clear_errors(
    env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    _append_exchanges(database_url, "dave", 6)
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / CONFIG_FILE).write_text(json.dumps({
        "peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": "someone/else"}))
    (folder / WEIGHTS_FILE).write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    proc = _tessera(env, "import", str(folder), "--tenant", TENANT, "--user", "dave",
                    timeout=120)
    assert proc.returncode == 1, proc.stdout
    assert "error: adapter does not fit" in proc.stderr and "rank r=8" in proc.stderr
    assert "base_model_name_or_path='someone/else'" in proc.stderr
    assert "Traceback" not in proc.stderr
    with PostgresEventStore(database_url) as store:
        assert store.list_revisions(TENANT, "dave") == []

    proc = _tessera(env, "export", "rev-nope", str(tmp_path / "x"), timeout=120)
    assert proc.returncode == 1 and "error: no revision 'rev-nope'" in proc.stderr
