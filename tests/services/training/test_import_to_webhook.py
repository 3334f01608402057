"""Issue #18 end to end on the tiny model: a revision exported over HTTP is imported over
HTTP for the same user on another deployment, a trainer gates it (promoted), and the
tenant's webhook receiver on 127.0.0.1 gets the promotion, correctly signed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest
from fastapi.testclient import TestClient

from tessera.events.memory_store import MemoryEventStore
from tessera.events.webhooks import MemoryWebhookStore
from tessera.schemas.events import EventEnvelope, EventType
from tessera.services.auth import KeyAuthenticator
from tessera.services.http_app import create_app
from tessera.services.training_api import TrainingApi
from tessera.services.webhooks.dispatcher import WebhookDispatcher
from tessera.services.webhooks.sender import RetryPolicy, WebhookSender
from tessera.services.webhooks.signing import verify
from tessera.workers.adapter_import import handle_request, import_target
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.gate import GateConfig
from tessera.workers.lora_config import LoraTrainConfig
from tessera.workers.pipeline import Engine, PipelineConfig, RevisionPipeline
from tessera.workers.training_request import TrainingRequest

from .receiver import receiver

pytestmark = [pytest.mark.slow]
ADMIN = "admin-key-for-tests-0123456789"
SECRET = "whsec-0123456789abcdef"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    import torch

    from tessera.bench.tiny_model import build_tiny_model
    from tessera.workers.base_model import (
        BaseModelInfo,
        load_base_model,
        weight_files,
        weights_digest,
    )

    torch.set_num_threads(1)
    folder = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    files = weight_files(folder)
    info = BaseModelInfo(folder, "tiny-llama", weights_digest(files),
                         sum(f.stat().st_size for f in files))
    model, tokenizer = load_base_model(info)
    return Engine(info, model, tokenizer)


def _deployment(engine: Engine, root: Path) -> tuple[RevisionPipeline, TrainingApi,
                                                        list[TrainingRequest]]:
    store = MemoryEventStore()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store.append([EventEnvelope(event_type=EventType.EXCHANGE, tenant_id="acme",
                                user_id="alice", occurred_at=start + timedelta(minutes=i),
                                data={"prompt": f"What is the plan for day {i % 5}?",
                                      "response": "sure thing, see you at noon!"})
                  for i in range(24)])
    config = PipelineConfig(
        train=LoraTrainConfig(rank=4, alpha=8.0, epochs=3, batch_size=8, lr=5e-3,
                              max_length=64, dropout=0.0),
        gate=GateConfig(min_gain=0.01, max_regression=0.5, min_heldout_examples=4),
        seed=7, holdout_k=4, min_train_examples=4, eval_max_length=64)
    pipeline = RevisionPipeline(store, LocalAdapterStore(root), engine, config)
    published: list[TrainingRequest] = []
    api = TrainingApi(store=store, adapters=pipeline.adapters, hooks=MemoryWebhookStore(),
                      publish=published.append,
                      resolve_target=lambda: import_target(engine.base, config.personal_train))
    return pipeline, api, published


def _client(api: TrainingApi) -> TestClient:
    auth = KeyAuthenticator(lookup={"acme-key": "acme"}.get, admin_key=ADMIN)
    return TestClient(create_app(auth=auth, training=api))


def test_exported_adapter_imported_elsewhere_is_promoted_and_announced(
    engine: Engine, tmp_path: Path
) -> None:
    there, there_api, _ = _deployment(engine, tmp_path / "there")
    done = there.run(TrainingRequest(tenant_id="acme", user_id="alice", up_to_position=24,
                                     trigger="test"))
    assert done.outcome == "promoted", done.reasons
    exported = _client(there_api).get(f"/v1/admin/revisions/{done.revision_id}/adapter",
                                      headers={"X-API-Key": "acme-key"})
    assert exported.status_code == 200, exported.text

    here, here_api, published = _deployment(engine, tmp_path / "here")
    with receiver([200]) as rx:
        client = _client(here_api)
        put = client.put("/v1/admin/tenants/acme/webhook", headers={"X-API-Key": "acme-key"},
                         json={"url": rx.url, "secret": SECRET})
        assert put.status_code == 200, put.text
        answer = client.post("/v1/admin/users/acme/alice/adapters", content=exported.content,
                             headers={"X-API-Key": "acme-key",
                                      "Content-Type": "application/x-tar"})
        assert answer.status_code == 202, answer.text
        (request,) = published  # what the trainer group would consume
        outcome = handle_request(here, request)
        assert outcome.outcome == "promoted", outcome.reasons
        assert outcome.revision_id == answer.json()["revision_id"]
        # The deployment's store is the MemoryEventStore built above (typed as the
        # pipeline's narrower RevisionLog).
        dispatcher = WebhookDispatcher(cast(MemoryEventStore, here.store), here_api.hooks,
                                       WebhookSender(here_api.hooks,
                                                     RetryPolicy(allow_private_hosts=True)))
        assert dispatcher.run_once() == 1
        listed = client.get("/v1/admin/users/acme/alice/revisions",
                            headers={"X-API-Key": "acme-key"}).json()
    (got,) = rx.got
    assert verify(SECRET, timestamp=got.headers["x-tessera-timestamp"],
                  signature=got.headers["x-tessera-signature"], body=got.body)
    body = json.loads(got.body)
    assert body["type"] == "revision.promoted"
    assert body["data"]["revision_id"] == outcome.revision_id
    (row,) = listed["revisions"]
    assert row["state"] == "promoted" and row["served"] and row["trigger"] == "import"
    assert row["origin"]["kind"] == "import" and row["origin"]["actor"] == "tenant:acme"
    assert row["origin"]["sha256"] == done.adapter_digest  # the exported file's own digest
