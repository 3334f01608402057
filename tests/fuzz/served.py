"""A real Tessera deployment for the hostile-input and isolation tests.

`tessera serve` (ingest, inference with the tiny model, audit; HTTP and gRPC) and
`tessera worker ingest` run as child processes at their default log levels, on a
database and topics of their own, with two tenants holding real API keys. Tenant B's
user `bob` has a promoted revision (a real adapter blob in the store) and one audited
inference request, so there is something of B's for A to try to reach.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

from tessera.bench.subprocesses import TesseraProcess
from tessera.events.migrate import migrate
from tessera.events.postgres_store import PostgresEventStore
from tessera.events.tenants import create_tenant, issue_api_key
from tessera.infra.stack import StackInfo, free_port
from tessera.schemas.events import EventEnvelope, EventType, utcnow
from tessera.schemas.revisions import RevisionEvaluated, RevisionPromoted, RevisionTrained
from tessera.workers.adapter_store import AdapterBlobConfig, LocalAdapterStore, save_adapter_blob

ADMIN_KEY = "adm_" + uuid.uuid4().hex  # a fresh secret per session, grepped for in logs
TENANT_A, TENANT_B = "tenant-a", "tenant-b"
B_USER = "bob"
TARGETS = ["q_proj", "v_proj"]
# The tiny model (bench/tiny_model.py defaults): hidden 64, 2 layers, 2 KV heads of 16.
_HIDDEN, _KV_OUT, _LAYERS, _RANK = 64, 32, 2, 4


@dataclass
class Deployment:
    """What the tests need to reach and inspect the running processes."""

    http: str
    grpc: str
    database_url: str
    key_a: str
    key_b: str
    b_revision_id: str
    b_digest: str
    b_request_id: str
    topic_interactions: str
    env: dict[str, str]  # the TESSERA_* variables of the children, for more of them
    root: Path
    processes: list[TesseraProcess] = field(default_factory=list)

    def headers(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    def logs(self) -> str:
        """Everything the child processes have written so far."""
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.processes)

    def assert_alive(self) -> None:
        for proc in self.processes:
            proc.ensure_running()


def _fresh_database(stack: StackInfo) -> str:
    name = f"fz_{uuid.uuid4().hex[:12]}"
    head, _, _ = stack.database_url.rpartition("/")
    with psycopg.connect(f"{head}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # generated identifier, safe
    url = f"{head}/{name}"
    migrate(url)
    return url


def _adapter_blob(adapters: LocalAdapterStore) -> str:
    import torch

    gen = torch.Generator().manual_seed(11)
    state: dict[str, torch.Tensor] = {}
    for layer in range(_LAYERS):
        for target, out in (("q_proj", _HIDDEN), ("v_proj", _KV_OUT)):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{target}"
            state[f"{prefix}.lora_A.weight"] = torch.randn(_RANK, _HIDDEN, generator=gen) * 0.1
            state[f"{prefix}.lora_B.weight"] = torch.randn(out, _RANK, generator=gen) * 0.1
    cfg = AdapterBlobConfig(r=_RANK, lora_alpha=8.0, target_modules=tuple(TARGETS),
                            base_digest="tiny")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "blob.safetensors"
        save_adapter_blob(state, cfg, path)
        return str(adapters.put_file(path))


def _promoted_revision(store: PostgresEventStore, adapters: LocalAdapterStore) -> tuple[str, str]:
    """B/bob: one interaction and a trained -> evaluated -> promoted revision."""
    def env(kind: EventType, data: dict[str, object]) -> EventEnvelope:
        return EventEnvelope(event_type=kind, tenant_id=TENANT_B, user_id=B_USER,
                             occurred_at=utcnow(), data=data)

    store.append([env(EventType.TEXT, {"text": "bob's private note", "context": []})])
    rid, digest = f"rev-{uuid.uuid4().hex[:10]}", _adapter_blob(adapters)
    to = store.head_position()
    trained = RevisionTrained(
        revision_id=rid, kind="personal", parent_revision_id=None, base_model_id="tiny",
        base_digest="b" * 64, adapter_digest=digest, adapter_bytes=1000, rank=_RANK, alpha=8.0,
        target_modules=TARGETS, hyperparameters={}, seed=7, dataset_from=1, dataset_to=to,
        dataset_digest="d" * 64, heldout_positions=[to], code_version="git:test",
        trigger="test", train_seconds=0.1)
    evaluated = RevisionEvaluated(revision_id=rid, metrics={"user_nll": 2.0},
                                  baseline_revision_id=None, baseline_metrics={"user_nll": 2.5})
    promoted = RevisionPromoted(revision_id=rid, adapter_digest=digest, reasons=["test"])
    store.append([env(EventType.REVISION_TRAINED, trained.model_dump(mode="json")),
                  env(EventType.REVISION_EVALUATED, evaluated.model_dump(mode="json")),
                  env(EventType.REVISION_PROMOTED, promoted.model_dump(mode="json"))])
    return rid, digest


def _b_request(http: str, key_b: str) -> str:
    """One audited inference request by B/bob; waits until the request log has it."""
    resp = httpx.post(f"{http}/v1/generate", headers={"Authorization": f"Bearer {key_b}"},
                      json={"user_id": B_USER, "prompt": "hello", "max_tokens": 2}, timeout=60)
    resp.raise_for_status()
    request_id = str(resp.json()["request_id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        audit = httpx.get(f"{http}/v1/admin/requests/{request_id}",
                          headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10)
        if audit.status_code == 200:
            return request_id
        time.sleep(0.2)
    raise RuntimeError(f"request {request_id} never reached the request log")


def settings_env(database_url: str, bootstrap: str, state_dir: Path, tiny: Path,
                 tag: str) -> dict[str, str]:
    """TESSERA_* variables for children on their own database, topics and groups."""
    return {
        "TESSERA_DATABASE_URL": database_url,
        "TESSERA_KAFKA_BOOTSTRAP": bootstrap,
        "TESSERA_STATE_DIR": str(state_dir),
        "TESSERA_BASE_MODEL": str(tiny),
        "TESSERA_ADMIN_KEY": ADMIN_KEY,
        "TESSERA_TOPIC_INTERACTIONS": f"{tag}.interactions",
        "TESSERA_TOPIC_INTERACTIONS_DLQ": f"{tag}.interactions.dlq",
        "TESSERA_TOPIC_TRAINING_REQUESTS": f"{tag}.training-requests",
        "TESSERA_TOPIC_REVISIONS": f"{tag}.revisions",
        "TESSERA_TOPIC_PARTITIONS": "2",
        "TESSERA_STREAM_GROUP": f"{tag}-ingest",
        "TESSERA_TRAIN_GROUP": f"{tag}-train",
        "TESSERA_INFERENCE_TARGET_MODULES": json.dumps(TARGETS),
        "TESSERA_INFERENCE_DEVICE_SLOTS": "4",
        "TESSERA_INFERENCE_MAX_RANK": "4",
        "TESSERA_INFERENCE_MAX_BATCH": "8",
        "TESSERA_INFERENCE_MAX_TOKENS": "16",
        "TESSERA_INFERENCE_MAX_PROMPT_TOKENS": "512",
        "TESSERA_INFERENCE_REQUEST_TIMEOUT_S": "30",
    }


@contextmanager
def deployment(stack: StackInfo, root: Path) -> Iterator[Deployment]:
    """Start the processes (default log levels) and yield once both tenants' data exist."""
    from tessera.bench.tiny_model import build_tiny_model

    tiny = build_tiny_model(root / "tiny")
    database_url = _fresh_database(stack)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_tenant(conn, TENANT_A)
        create_tenant(conn, TENANT_B)
        key_a, key_b = issue_api_key(conn, TENANT_A), issue_api_key(conn, TENANT_B)
    state_dir = root / "state"
    adapters = LocalAdapterStore(state_dir / "adapters")
    with PostgresEventStore(database_url) as store:
        rid, digest = _promoted_revision(store, adapters)
    tag = f"fz-{uuid.uuid4().hex[:8]}"
    env = settings_env(database_url, stack.kafka_bootstrap, state_dir, tiny, tag)
    http_port, grpc_port = free_port(), free_port()
    with ExitStack() as stack_ctx:
        serve = stack_ctx.enter_context(TesseraProcess(
            "serve", ["serve", "--http-port", str(http_port), "--grpc-port", str(grpc_port)],
            log_path=root / "serve.log", env=env))
        worker = stack_ctx.enter_context(TesseraProcess(
            "worker-ingest", ["worker", "ingest"], log_path=root / "worker.log", env=env))
        http = f"http://127.0.0.1:{http_port}"
        serve.wait_http(f"{http}/healthz", timeout_s=180)
        request_id = _b_request(http, key_b)
        served = Deployment(
            http=http, grpc=f"127.0.0.1:{grpc_port}", database_url=database_url,
            key_a=key_a, key_b=key_b, b_revision_id=rid, b_digest=digest,
            b_request_id=request_id, topic_interactions=env["TESSERA_TOPIC_INTERACTIONS"],
            env=env, root=root, processes=[serve, worker],
        )
        try:
            yield served
        finally:  # tests append processes of their own (a trainer): stop those too
            for proc in served.processes:
                proc.stop()


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
