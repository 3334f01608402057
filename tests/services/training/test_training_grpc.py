"""gRPC tessera.v1.Training: the same answers and access rules as the HTTP routes."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import grpc
import pytest

from tessera.events.memory_store import MemoryEventStore
from tessera.events.webhooks import MemoryWebhookStore
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_server import start_grpc_server
from tessera.services.grpc_training import training_grpc_service
from tessera.services.training_api import TrainingApi
from tessera.workers.adapter_store import LocalAdapterStore
from tessera.workers.peft_format import ImportTarget
from tessera.workers.revision_events import revision_id_for
from tessera.workers.training_request import TrainingRequest

from .events import evaluated, exchange, promoted, rejected, trained

ADMIN = "admin-key-for-tests-0123456789"
KEYS = {"acme-key": "acme", "globex-key": "globex"}


def _no_target() -> ImportTarget:
    raise AssertionError("gRPC has no import")


@pytest.fixture()
def stub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[
        tuple[tessera_pb2_grpc.TrainingStub, list[TrainingRequest]]]:
    store = MemoryEventStore()
    store.append([exchange("acme", "alice", n) for n in range(4)])
    store.append([trained("acme", "alice", "r1"), evaluated("acme", "alice", "r1"),
                  promoted("acme", "alice", "r1")])
    store.append([trained("acme", "alice", "r2", parent="r1"), evaluated("acme", "alice", "r2"),
                  rejected("acme", "alice", "r2")])
    published: list[TrainingRequest] = []
    api = TrainingApi(store=store, adapters=LocalAdapterStore(tmp_path_factory.mktemp("a")),
                      hooks=MemoryWebhookStore(), publish=published.append,
                      resolve_target=_no_target)
    auth = KeyAuthenticator(lookup=KEYS.get, admin_key=ADMIN)
    server = start_grpc_server([training_grpc_service(api=api, auth=auth)], host="127.0.0.1",
                               port=0)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield tessera_pb2_grpc.TrainingStub(channel), published
    finally:
        server.stop(0.5)


def _md(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_request_list_and_read(
    stub: tuple[tessera_pb2_grpc.TrainingStub, list[TrainingRequest]]
) -> None:
    client, published = stub
    alice = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="alice")
    got = client.RequestRevision(alice, metadata=_md("acme-key"))
    assert got.up_to_position == 4
    # the id the trainer will give the candidate, so a client can poll GetRevision for it
    assert got.revision_id == revision_id_for("acme", "alice", 4)
    assert json.loads(got.json)["revision_id"] == got.revision_id
    assert [(r.user_id, r.up_to_position, r.trigger) for r in published] == [
        ("alice", 4, "manual")]
    listed = client.ListRevisions(alice, metadata=_md(ADMIN))
    assert listed.served_revision_id == "r1"
    assert [(r.revision_id, r.state, r.served) for r in listed.revisions] == [
        ("r1", "promoted", True), ("r2", "rejected", False)]
    assert json.loads(listed.json)["revisions"][1]["reasons"] == ["worse than baseline"]
    one = client.GetRevision(tessera_pb2.TrainingRevisionRef(
        tenant_id="acme", user_id="alice", revision_id="r2"), metadata=_md("acme-key"))
    assert one.parent_revision_id == "r1" and list(one.reasons) == ["worse than baseline"]


def test_access_and_errors(
    stub: tuple[tessera_pb2_grpc.TrainingStub, list[TrainingRequest]]
) -> None:
    client, published = stub
    alice = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="alice")
    assert _code(lambda: client.ListRevisions(alice)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: client.ListRevisions(alice, metadata=_md("globex-key"))) == (
        grpc.StatusCode.PERMISSION_DENIED)
    assert _code(lambda: client.RequestRevision(alice, metadata=_md("globex-key"))) == (
        grpc.StatusCode.PERMISSION_DENIED)
    nobody = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="nobody")
    assert _code(lambda: client.RequestRevision(nobody, metadata=_md(ADMIN))) == (
        grpc.StatusCode.NOT_FOUND)
    prior = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="~prior")
    assert _code(lambda: client.RequestRevision(prior, metadata=_md(ADMIN))) == (
        grpc.StatusCode.INVALID_ARGUMENT)
    other = tessera_pb2.TrainingRevisionRef(tenant_id="acme", user_id="bob", revision_id="r1")
    assert _code(lambda: client.GetRevision(other, metadata=_md(ADMIN))) == (
        grpc.StatusCode.NOT_FOUND)
    long_id = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="u" * 10_000)
    assert _code(lambda: client.ListRevisions(long_id, metadata=_md(ADMIN))) == (
        grpc.StatusCode.INVALID_ARGUMENT)
    assert published == []
