"""Found by test_grpc_fuzz: an admin id containing NUL used to reach PostgreSQL, whose
text type cannot hold NUL, and came back as HTTP 500 / gRPC UNKNOWN. Such an id names
nothing: the answer is "not found"."""

from __future__ import annotations

import grpc
import httpx
import pytest

from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.proto_gen import tessera_pb2_grpc as pb_grpc

from .served import ADMIN_KEY, Deployment


@pytest.mark.parametrize("path", ["/v1/admin/revisions/a%00b", "/v1/admin/requests/a%00b",
                                  "/v1/admin/users/t%00/u/lineage"])
def test_http_admin_nul_id_is_a_4xx(served: Deployment, path: str) -> None:
    resp = httpx.get(f"{served.http}{path}", headers=served.headers(ADMIN_KEY), timeout=30)
    assert 400 <= resp.status_code < 500, resp.status_code


def test_grpc_admin_nul_id_is_not_unknown(served: Deployment) -> None:
    with grpc.insecure_channel(served.grpc) as channel:
        stub = pb_grpc.AdminStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.RevisionProvenance(pb.RevisionRef(revision_id="a\x00b"),
                                    metadata=(("x-api-key", ADMIN_KEY),), timeout=30)
    assert info.value.code() not in {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
