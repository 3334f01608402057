"""The training API over HTTP: tenancy, requests, revision state, export and import.

In-memory event and webhook stores, a real adapter store, the tiny model's folder for
what an import must fit; published training requests are captured."""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from tessera.events.memory_store import MemoryEventStore
from tessera.events.webhooks import MemoryWebhookStore
from tessera.services.auth import KeyAuthenticator
from tessera.services.http_app import create_app
from tessera.services.training_api import TrainingApi
from tessera.workers.adapter_store import AdapterBlobConfig, LocalAdapterStore, save_adapter_blob
from tessera.workers.peft_format import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ImportTarget,
    expected_shapes,
    linear_shapes,
)
from tessera.workers.training_request import TrainingRequest

from .events import evaluated, exchange, promoted, rejected, trained

ADMIN = "admin-key-for-tests-0123456789"
KEYS = {"acme-key": "acme", "globex-key": "globex"}


@dataclass
class Env:
    client: TestClient
    store: MemoryEventStore
    adapters: LocalAdapterStore
    published: list[TrainingRequest]
    target: ImportTarget


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tessera.bench.tiny_model import build_tiny_model

    folder: Path = build_tiny_model(tmp_path_factory.mktemp("tiny"))
    return folder


@pytest.fixture()
def env(model_dir: Path, tmp_path: Path) -> Iterator[Env]:
    store = MemoryEventStore()
    store.append([exchange("acme", "alice", n) for n in range(5)])
    store.append([trained("acme", "alice", "r1"), evaluated("acme", "alice", "r1"),
                  promoted("acme", "alice", "r1")])
    store.append([trained("acme", "alice", "r2", parent="r1"), evaluated("acme", "alice", "r2"),
                  rejected("acme", "alice", "r2")])
    target = ImportTarget(base_model_id="tiny", base_digest="b" * 64, rank=8, alpha=16.0,
                          target_modules=("q_proj", "v_proj"),
                          linear_shapes=linear_shapes(model_dir))
    published: list[TrainingRequest] = []
    adapters = LocalAdapterStore(tmp_path / "adapters")
    api = TrainingApi(store=store, adapters=adapters, hooks=MemoryWebhookStore(),
                      publish=published.append, resolve_target=lambda: target)
    app = create_app(auth=KeyAuthenticator(lookup=KEYS.get, admin_key=ADMIN), training=api)
    with TestClient(app) as client:
        yield Env(client, store, adapters, published, target)


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _blob(env: Env, seed: int = 0) -> str:
    gen = torch.Generator().manual_seed(seed)
    tensors = {k: torch.randn(shape, generator=gen) for k, shape in
               expected_shapes(env.target).items()}
    path = env.adapters.root / "tmp.safetensors"
    save_adapter_blob(tensors, AdapterBlobConfig(8, 16.0, ("q_proj", "v_proj"), "b" * 64), path)
    digest: str = env.adapters.put_file(path)
    path.unlink()
    return digest


def test_request_a_revision_publishes_the_training_request(env: Env) -> None:
    r = env.client.post("/v1/admin/users/acme/alice/revisions", headers=_h("acme-key"))
    assert r.status_code == 202, r.text
    assert r.json()["up_to_position"] == 5
    (req,) = env.published
    assert (req.tenant_id, req.user_id, req.up_to_position, req.trigger) == (
        "acme", "alice", 5, "manual")
    assert req.adapter_import is None
    r = env.client.post("/v1/admin/users/acme/nobody/revisions", headers=_h(ADMIN))
    assert r.status_code == 404 and "no interaction events" in r.json()["detail"]


def test_tenancy(env: Env) -> None:
    path = "/v1/admin/users/acme/alice/revisions"
    assert env.client.get(path).status_code == 401
    assert env.client.get(path, headers=_h("wrong")).status_code == 401
    assert env.client.get(path, headers=_h("globex-key")).status_code == 403
    assert env.client.post(path, headers=_h("globex-key")).status_code == 403
    assert env.client.get(path, headers=_h(ADMIN)).status_code == 200
    assert env.client.get("/v1/admin/revisions/r1/adapter",
                          headers=_h("globex-key")).status_code == 404
    assert env.published == []


def test_list_and_read_revisions_with_state(env: Env) -> None:
    body = env.client.get("/v1/admin/users/acme/alice/revisions", headers=_h("acme-key")).json()
    assert body["served_revision_id"] == "r1"
    got = [(r["revision_id"], r["state"], r["served"], r["reasons"]) for r in body["revisions"]]
    assert got == [("r1", "promoted", True, ["beats baseline"]),
                   ("r2", "rejected", False, ["worse than baseline"])]
    one = env.client.get("/v1/admin/users/acme/alice/revisions/r2", headers=_h("acme-key"))
    assert one.status_code == 200 and one.json()["parent_revision_id"] == "r1"
    assert env.client.get("/v1/admin/users/acme/bob/revisions/r2",
                          headers=_h("acme-key")).status_code == 404


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"adapter/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _export(env: Env, digest: str) -> dict[str, bytes]:
    env.store.append([trained("acme", "alice", "r3", parent="r1", adapter_digest=digest)])
    r = env.client.get("/v1/admin/revisions/r3/adapter", headers=_h("acme-key"))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    return files


def test_export_then_import_round_trip(env: Env) -> None:
    digest = _blob(env)
    files = _export(env, digest)
    assert sorted(files) == [CONFIG_FILE, WEIGHTS_FILE]
    assert files[WEIGHTS_FILE] == env.adapters.read_bytes(digest)
    assert json.loads(files[CONFIG_FILE])["r"] == 8

    r = env.client.post("/v1/admin/users/acme/alice/adapters", content=_tar(files),
                        headers={**_h("acme-key"), "Content-Type": "application/gzip"})
    assert r.status_code == 202, r.text
    (req,) = env.published
    ref = req.adapter_import
    assert ref is not None and req.trigger == "import" and req.up_to_position == 5
    assert ref.actor == "tenant:acme" and ref.source == "http"
    assert env.adapters.exists(ref.adapter_digest)
    assert r.json()["revision_id"].startswith("imp-")


def test_import_refuses_misfits_with_the_reason(env: Env) -> None:
    files = _export(env, _blob(env))
    config = json.loads(files[CONFIG_FILE])
    config["r"] = 4
    bad = {**files, CONFIG_FILE: json.dumps(config).encode()}
    r = env.client.post("/v1/admin/users/acme/alice/adapters", content=_tar(bad),
                        headers=_h(ADMIN))
    assert r.status_code == 422 and "rank r=4" in r.json()["detail"]
    r = env.client.post("/v1/admin/users/acme/alice/adapters", content=b"not a tar",
                        headers=_h(ADMIN))
    assert r.status_code == 422 and "not a tar" in r.json()["detail"]
    r = env.client.post("/v1/admin/users/acme/alice/adapters", content=_tar(files),
                        headers=_h("globex-key"))
    assert r.status_code == 403
    assert env.published == []


def test_webhook_config_routes(env: Env) -> None:
    path = "/v1/admin/tenants/acme/webhook"
    assert env.client.get(path, headers=_h("acme-key")).status_code == 404
    body = {"url": "https://app.example/hooks/tessera", "secret": "s" * 24}
    assert env.client.put(path, json=body, headers=_h("globex-key")).status_code == 403
    r = env.client.put(path, json=body, headers=_h("acme-key"))
    assert r.status_code == 200 and r.json()["url"] == body["url"]
    got = env.client.get(path, headers=_h(ADMIN)).json()
    assert got["url"] == body["url"] and "secret" not in got
    short = env.client.put(path, json={**body, "secret": "short"}, headers=_h(ADMIN))
    assert short.status_code == 422
    ftp = env.client.put(path, json={**body, "url": "ftp://x"}, headers=_h(ADMIN))
    assert ftp.status_code == 422
    assert env.client.get(f"{path}/deliveries", headers=_h("acme-key")).json() == []
    assert env.client.delete(path, headers=_h("acme-key")).status_code == 204
    assert env.client.delete(path, headers=_h("acme-key")).status_code == 404
