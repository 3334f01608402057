"""Imported peft adapters are gated like trained revisions, with their origin recorded.

A "good" adapter is one Tessera trained on alice's events elsewhere (another store) and
exported as a peft folder; a "bad" one is random noise. Imported for alice on a store
where she is served the base model, the good one is promoted and the bad one rejected,
each with the gate's reasons; the same file again is a no-op; her next trained revision
is warm-started from the imported head.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tessera.events.memory_store import MemoryEventStore
from tessera.workers.adapter_import import handle_request, import_target, stage_import
from tessera.workers.adapter_store import LocalAdapterStore, sha256_file
from tessera.workers.peft_format import CONFIG_FILE, WEIGHTS_FILE, export_blob, read_peft_dir
from tessera.workers.pipeline import Engine, RevisionPipeline
from tessera.workers.training_request import TrainingRequest

from .conftest import TENANT, exchanges, tiny_pipeline_config


def _pipeline(engine: Engine, root: Path, n_events: int = 24) -> RevisionPipeline:
    store = MemoryEventStore()
    store.append(exchanges("alice", n_events))
    return RevisionPipeline(store, LocalAdapterStore(root), engine, tiny_pipeline_config())


def _exported_good_adapter(engine: Engine, tmp_path: Path) -> Path:
    elsewhere = _pipeline(engine, tmp_path / "elsewhere")
    done = elsewhere.run(TrainingRequest(tenant_id=TENANT, user_id="alice", up_to_position=24,
                                         trigger="test"))
    assert done.outcome == "promoted", done.reasons
    assert done.adapter_digest is not None
    folder: Path = export_blob(elsewhere.adapters.path(done.adapter_digest),
                               tmp_path / "good", base_model_id=engine.base.model_id)
    return folder


def _import(pipeline: RevisionPipeline, folder: Path) -> TrainingRequest:
    target = import_target(pipeline.engine.base, pipeline.config.personal_train)
    return stage_import(read_peft_dir(folder), target, pipeline.adapters, tenant_id=TENANT,
                        user_id="alice", up_to_position=24, source="test", actor="admin-key")


def test_good_import_is_promoted_with_origin_and_trains_on(engine: Engine,
                                                           tmp_path: Path) -> None:
    folder = _exported_good_adapter(engine, tmp_path)
    pipeline = _pipeline(engine, tmp_path / "here")
    request = _import(pipeline, folder)
    outcome = handle_request(pipeline, request)
    assert outcome.outcome == "promoted", outcome.reasons
    assert outcome.revision_id is not None and outcome.revision_id.startswith("imp-")
    row = pipeline.store.get_revision(outcome.revision_id)
    assert row is not None and row.state == "promoted"
    origin = row.provenance["hyperparameters"]["origin"]
    assert origin == {"kind": "import", "sha256": sha256_file(folder / WEIGHTS_FILE),
                      "source": "test", "actor": "admin-key"}
    assert row.provenance["trigger"] == "import" and row.parent_revision_id is None
    assert row.metrics["user_nll"] < row.baseline_metrics["user_nll"]  # the gate's figures
    head = pipeline.store.get_head(TENANT, "alice")
    assert head is not None and head.revision_id == outcome.revision_id

    again = handle_request(pipeline, _import(pipeline, folder))
    assert again.outcome == "skipped" and "imported already" in again.reasons[0]

    # the next trained revision starts from the imported head and learns all her events
    pipeline.store.append(exchanges("alice", 4, seed=1))
    nxt = handle_request(pipeline, TrainingRequest(tenant_id=TENANT, user_id="alice",
                                                   up_to_position=28, trigger="test"))
    assert nxt.parent_revision_id == outcome.revision_id
    assert nxt.revision_id is not None
    trained = pipeline.store.get_revision(nxt.revision_id)
    assert trained is not None and trained.dataset_from == 1


def test_noise_import_is_rejected_with_reasons(engine: Engine, tmp_path: Path) -> None:
    folder = _exported_good_adapter(engine, tmp_path)
    tensors = load_file(str(folder / WEIGHTS_FILE))
    gen = torch.Generator().manual_seed(0)
    noise = {k: torch.randn(v.shape, generator=gen) * 3.0 for k, v in tensors.items()}
    save_file(noise, str(folder / WEIGHTS_FILE))  # third-party: no Tessera metadata
    config = json.loads((folder / CONFIG_FILE).read_text())
    assert config["base_model_name_or_path"] == engine.base.model_id
    pipeline = _pipeline(engine, tmp_path / "here")
    outcome = handle_request(pipeline, _import(pipeline, folder))
    assert outcome.outcome == "rejected"
    assert outcome.reasons and any("nll" in r.lower() or "canar" in r.lower()
                                   for r in outcome.reasons), outcome.reasons
    assert pipeline.store.get_head(TENANT, "alice") is None  # still served the base


def test_import_of_a_user_forgotten_since_upload_is_dropped(engine: Engine,
                                                             tmp_path: Path) -> None:
    from tessera.workers.adapter_store import AdapterBlobConfig, save_adapter_blob
    from tessera.workers.peft_format import expected_shapes

    pipeline = _pipeline(engine, tmp_path / "here")
    cfg = pipeline.config.personal_train
    target = import_target(engine.base, cfg)
    tensors = {k: torch.zeros(shape) for k, shape in expected_shapes(target).items()}
    blob = tmp_path / "zero.safetensors"
    save_adapter_blob(tensors, AdapterBlobConfig(cfg.rank, cfg.alpha, cfg.target_modules,
                                                 engine.base.digest), blob)
    request = _import(pipeline, export_blob(blob, tmp_path / "zero", base_model_id="x"))
    assert request.adapter_import is not None
    staged = request.adapter_import.adapter_digest
    assert pipeline.adapters.exists(staged)
    store = pipeline.store
    assert isinstance(store, MemoryEventStore)
    store.forget_user(TENANT, "alice", actor="admin-key", reason="asked")
    outcome = handle_request(pipeline, request)
    assert outcome.outcome == "skipped" and "no events" in outcome.reasons[0]
    assert not pipeline.adapters.exists(staged)  # nothing of the upload stays
    assert store.list_revisions(TENANT, "alice") == []
