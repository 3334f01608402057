"""gRPC Admin bounds free text as the HTTP models do (issue #13): a reason over
MAX_REASON_CHARS, or an id over MAX_ID_CHARS, is INVALID_ARGUMENT and changes nothing."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc
import pytest

from tessera.events.postgres_store import PostgresEventStore
from tessera.schemas.api import MAX_ID_CHARS, MAX_REASON_CHARS
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.services.audit.backend import AdminBackend
from tessera.services.corrective import CorrectiveActions
from tessera.workers.adapter_store import LocalAdapterStore

from .builders import interactions, marker, revision
from .servers import ADMIN_KEY, AdminServer, admin_server

ADMIN = (("x-api-key", ADMIN_KEY),)


@pytest.fixture()
def server(store: PostgresEventStore, actions: CorrectiveActions) -> Iterator[AdminServer]:
    with admin_server(AdminBackend(store=store, actions=actions)) as s:
        yield s


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_grpc_admin_bounds_reasons_and_ids(
    server: AdminServer, store: PostgresEventStore, adapters: LocalAdapterStore
) -> None:
    interactions(store, "acme", "alice", [marker("a")])
    a1 = revision(store, adapters, "acme", "alice", parent=None)
    a2 = revision(store, adapters, "acme", "alice", parent=a1.revision_id)
    with grpc.insecure_channel(server.grpc) as channel:
        stub = tessera_pb2_grpc.AdminStub(channel)

        def rollback(reason: str, tenant: str = "acme") -> grpc.StatusCode:
            request = tessera_pb2.RollbackRequest(tenant_id=tenant, user_id="alice", reason=reason)
            return _code(lambda: stub.Rollback(request, metadata=ADMIN, timeout=30))

        too_long = "r" * (MAX_REASON_CHARS + 1)
        assert rollback(too_long) == grpc.StatusCode.INVALID_ARGUMENT
        assert rollback("x", tenant="t" * (MAX_ID_CHARS + 1)) == grpc.StatusCode.INVALID_ARGUMENT
        forget = tessera_pb2.ForgetRequest(tenant_id="acme", user_id="alice", reason=too_long)
        assert (_code(lambda: stub.Forget(forget, metadata=ADMIN, timeout=30))
                == grpc.StatusCode.INVALID_ARGUMENT)
        lineage = tessera_pb2.AdminUserRef(tenant_id="acme", user_id="u" * (MAX_ID_CHARS + 1))
        assert (_code(lambda: stub.UserLineage(lineage, metadata=ADMIN, timeout=30))
                == grpc.StatusCode.INVALID_ARGUMENT)
        head = store.get_head("acme", "alice")
        assert head is not None and head.revision_id == a2.revision_id  # nothing happened
        # At the limit it is an ordinary rollback.
        assert rollback("r" * MAX_REASON_CHARS) == grpc.StatusCode.OK
        head = store.get_head("acme", "alice")
        assert head is not None and head.revision_id == a1.revision_id
