"""Admin API over HTTP and gRPC: what each key may do, tried across tenants."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import httpx
import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.audit.backend import AdminBackend
from tessera.services.corrective import CorrectiveActions
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import Rev, interactions, marker, revision
from .servers import ADMIN_KEY, AdminServer, admin_server


@pytest.fixture()
def world(store: PostgresEventStore, adapters: LocalAdapterStore) -> dict[str, Rev]:
    """acme/alice: a1 <- a2 (served); other/olga: o1 (served)."""
    interactions(store, "acme", "alice", [marker("a")])
    a1 = revision(store, adapters, "acme", "alice", parent=None)
    a2 = revision(store, adapters, "acme", "alice", parent=a1.revision_id)
    interactions(store, "other", "olga", [marker("o")])
    o1 = revision(store, adapters, "other", "olga", parent=None)
    return {"a1": a1, "a2": a2, "o1": o1}


@pytest.fixture()
def server(store: PostgresEventStore, actions: CorrectiveActions) -> Iterator[AdminServer]:
    with admin_server(AdminBackend(store=store, actions=actions)) as s:
        yield s


def _h(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def test_http_access_rules(
    server: AdminServer, store: PostgresEventStore, world: dict[str, Rev]
) -> None:
    a2, o1 = world["a2"].revision_id, world["o1"].revision_id
    with httpx.Client(base_url=server.http, timeout=30) as http:
        lineage = "/v1/admin/users/acme/alice/lineage"
        assert http.get(lineage).status_code == 401
        assert http.get(lineage, headers=_h("wrong")).status_code == 401
        # A tenant key reads its own tenant's audit...
        own = http.get(lineage, headers=_h("key-acme"))
        assert own.status_code == 200 and own.json()["served"]["revision_id"] == a2
        assert http.get(f"/v1/admin/revisions/{a2}", headers=_h("key-acme")).status_code == 200
        # ...and nothing of another tenant's, whether named by path or by id.
        cross = http.get("/v1/admin/users/other/olga/lineage", headers=_h("key-acme"))
        assert cross.status_code == 403 and "tenant 'acme'" in cross.json()["detail"]
        assert http.get(f"/v1/admin/revisions/{o1}", headers=_h("key-acme")).status_code == 404
        # Rollback and forget need the admin key, even for the tenant's own users.
        for action, body in (("rollback", {"reason": "x"}), ("forget", {"reason": "x"})):
            for user in ("acme/alice", "other/olga"):
                r = http.post(f"/v1/admin/users/{user}/{action}", json=body,
                              headers=_h("key-acme"))
                assert r.status_code == 403, (action, user, r.text)
        assert store.get_head("acme", "alice").revision_id == a2  # type: ignore[union-attr]
        assert store.get_head("other", "olga").revision_id == o1  # type: ignore[union-attr]

        # The admin key sees every tenant and may act.
        admin = _h(ADMIN_KEY)
        assert http.get("/v1/admin/users/other/olga/lineage", headers=admin).status_code == 200
        refused = http.post("/v1/admin/users/acme/alice/rollback", headers=admin,
                            json={"reason": "x", "to_revision_id": o1})
        assert refused.status_code == 409 and "not a revision of acme/alice" in refused.text
        done = http.post("/v1/admin/users/acme/alice/rollback", headers=admin,
                         json={"reason": "regression"})
        assert done.status_code == 200, done.text
        assert done.json()["to_revision_id"] == world["a1"].revision_id
        assert done.json()["published"] is True
        gone = http.post("/v1/admin/users/other/olga/forget", headers=admin,
                         json={"reason": "erasure"})
        assert gone.status_code == 200 and gone.json()["forgotten_revision_ids"] == [o1]
        assert http.post("/v1/admin/users/other/nobody/forget", headers=admin,
                         json={"reason": "x"}).status_code == 404

        page = http.get("/admin/users/acme/alice")
        assert page.status_code == 200 and '<svg id="lineage"' in page.text


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_grpc_access_rules(
    server: AdminServer, store: PostgresEventStore, world: dict[str, Rev]
) -> None:
    a1, a2, o1 = (world[k].revision_id for k in ("a1", "a2", "o1"))
    with grpc.insecure_channel(server.grpc) as channel:
        stub = tessera_pb2_grpc.AdminStub(channel)
        tenant = (("authorization", "Bearer key-acme"),)
        admin = (("x-api-key", ADMIN_KEY),)
        alice = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="alice")
        olga = tessera_pb2.AdminUserRef(tenant_id="other", user_id="olga")

        assert _code(lambda: stub.UserLineage(alice)) == grpc.StatusCode.UNAUTHENTICATED
        own = stub.UserLineage(alice, metadata=tenant)
        assert own.served_revision_id == a2 and [r.revision_id for r in own.revisions] == [a1, a2]
        assert own.revisions[0].children == [a2]
        assert (_code(lambda: stub.UserLineage(olga, metadata=tenant))
                == grpc.StatusCode.PERMISSION_DENIED)
        assert (_code(lambda: stub.RevisionProvenance(
            tessera_pb2.RevisionRef(revision_id=o1), metadata=tenant)) == grpc.StatusCode.NOT_FOUND)
        for call in (
            lambda: stub.Rollback(tessera_pb2.RollbackRequest(
                tenant_id="acme", user_id="alice", reason="x"), metadata=tenant),
            lambda: stub.Forget(tessera_pb2.ForgetRequest(
                tenant_id="other", user_id="olga", reason="x"), metadata=tenant),
        ):
            assert _code(call) == grpc.StatusCode.PERMISSION_DENIED
        assert store.get_head("acme", "alice").revision_id == a2  # type: ignore[union-attr]

        prov = stub.RevisionProvenance(tessera_pb2.RevisionRef(revision_id=o1), metadata=admin)
        assert prov.revision.tenant_id == "other" and '"seed": 7' in prov.provenance_json
        assert (_code(lambda: stub.Rollback(tessera_pb2.RollbackRequest(
            tenant_id="acme", user_id="alice", to_revision_id=a2, reason="x"), metadata=admin))
            == grpc.StatusCode.FAILED_PRECONDITION)
        back = stub.Rollback(tessera_pb2.RollbackRequest(
            tenant_id="acme", user_id="alice", reason="regression"), metadata=admin)
        assert (back.from_revision_id, back.to_revision_id, back.published) == (a2, a1, True)
        gone = stub.Forget(tessera_pb2.ForgetRequest(
            tenant_id="other", user_id="olga", reason="erasure"), metadata=admin)
        assert list(gone.forgotten_revision_ids) == [o1]
        assert store.get_head("other", "olga") is None
