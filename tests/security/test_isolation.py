"""Tenant isolation against the real server: tenant A's key cannot read, train, serve,
audit, roll back or forget tenant B's users, over HTTP, gRPC and the OpenAI-compatible
API. B/bob has a promoted revision and an audited request (served.py); each test tries
to reach them with A's key and checks both the refusal and that B's data is untouched."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import grpc
import httpx
import psycopg
import pytest
from fuzz.served import ADMIN_KEY, B_USER, TENANT_A, TENANT_B, Deployment
from openai import OpenAI, PermissionDeniedError

from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.proto_gen import tessera_pb2_grpc as pb_grpc


def _b_head(served: Deployment) -> str | None:
    with psycopg.connect(served.database_url) as conn:
        row = conn.execute("SELECT revision_id FROM heads WHERE tenant_id = %s AND user_id = %s",
                           (TENANT_B, B_USER)).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture(autouse=True)
def b_is_untouched(served: Deployment) -> Iterator[None]:
    """Whatever a test tried, B/bob is still served its revision afterwards."""
    assert _b_head(served) == served.b_revision_id
    yield
    assert _b_head(served) == served.b_revision_id


# --- HTTP ---------------------------------------------------------------------------


def test_http_audit_of_b_is_refused_to_a(served: Deployment) -> None:
    a = served.headers(served.key_a)
    lineage = httpx.get(f"{served.http}/v1/admin/users/{TENANT_B}/{B_USER}/lineage", headers=a)
    assert lineage.status_code == 403 and TENANT_B in lineage.json()["detail"]
    # By id, B's revision and request do not exist for A: the answer is exactly the one
    # for an id nobody has, so A cannot even learn that they exist.
    for kind, real in (("revisions", served.b_revision_id), ("requests", served.b_request_id)):
        made_up = f"rev-{uuid.uuid4().hex[:10]}" if kind == "revisions" else str(uuid.uuid4())
        resp = httpx.get(f"{served.http}/v1/admin/{kind}/{real}", headers=a)
        nobody = httpx.get(f"{served.http}/v1/admin/{kind}/{made_up}", headers=a)
        assert resp.status_code == nobody.status_code == 404, resp.text
        assert resp.json()["detail"].replace(real, "ID") == \
            nobody.json()["detail"].replace(made_up, "ID")
    # The same reads work with B's own key: the refusals above are about the tenant.
    b = served.headers(served.key_b)
    for path in (f"/v1/admin/users/{TENANT_B}/{B_USER}/lineage",
                 f"/v1/admin/revisions/{served.b_revision_id}",
                 f"/v1/admin/requests/{served.b_request_id}"):
        assert httpx.get(f"{served.http}{path}", headers=b).status_code == 200, path


@pytest.mark.parametrize("action", ["rollback", "forget"])
@pytest.mark.parametrize("who", ["a", "b"])
def test_http_rollback_and_forget_need_the_admin_key(served: Deployment, action: str,
                                                     who: str) -> None:
    key = served.key_a if who == "a" else served.key_b
    resp = httpx.post(f"{served.http}/v1/admin/users/{TENANT_B}/{B_USER}/{action}",
                      headers=served.headers(key), json={"reason": "attack"})
    assert resp.status_code == 403 and "admin key" in resp.json()["detail"]


def test_http_generate_as_b_user_serves_only_a(served: Deployment) -> None:
    """A names B's user: A's own (empty) namespace answers, never B's adapter."""
    resp = httpx.post(f"{served.http}/v1/generate", headers=served.headers(served.key_a),
                      json={"user_id": B_USER, "prompt": "hi", "max_tokens": 2}, timeout=60)
    assert resp.status_code == 200, resp.text
    assert resp.json()["revision"] == {"revision_id": None, "adapter_digest": None,
                                       "source": "base"}
    mine = httpx.post(f"{served.http}/v1/generate", headers=served.headers(served.key_b),
                      json={"user_id": B_USER, "prompt": "hi", "max_tokens": 2}, timeout=60)
    assert mine.json()["revision"]["revision_id"] == served.b_revision_id  # the witness


def test_http_ingest_cannot_write_into_b(served: Deployment) -> None:
    """Events are filed under the key's tenant whatever the body claims, so A cannot add
    to (and so train) B's users: a `tenant_id` in an item is refused, and events for a
    user named like B's land in A's stream."""
    marker = f"iso-{uuid.uuid4().hex}"
    item = {"type": "text", "user_id": B_USER, "occurred_at": "2026-01-01T00:00:00Z",
            "text": marker}
    smuggled = httpx.post(f"{served.http}/v1/events", headers=served.headers(served.key_a),
                          json={"events": [{**item, "tenant_id": TENANT_B}]})
    assert smuggled.status_code == 422 and "tenant_id" in smuggled.text
    ok = httpx.post(f"{served.http}/v1/events", headers=served.headers(served.key_a),
                    json={"events": [item]})
    assert ok.status_code == 202, ok.text
    (event_id,) = ok.json()["accepted"]
    deadline = time.monotonic() + 60
    row = None
    while row is None and time.monotonic() < deadline:
        with psycopg.connect(served.database_url) as conn:
            row = conn.execute("SELECT tenant_id, user_id FROM events WHERE event_id = %s",
                               (event_id,)).fetchone()
        time.sleep(0.3)
    assert row == (TENANT_A, B_USER), "the ingest worker did not store the event in time"
    with psycopg.connect(served.database_url) as conn:
        in_b = conn.execute("SELECT count(*) FROM events WHERE tenant_id = %s AND "
                            "data::text LIKE %s", (TENANT_B, f"%{marker}%")).fetchone()
    assert in_b == (0,)


# --- OpenAI-compatible --------------------------------------------------------------


def test_openai_api_as_b_user_serves_only_a(served: Deployment) -> None:
    client = OpenAI(base_url=f"{served.http}/v1", api_key=served.key_a, max_retries=0)
    chat = client.chat.completions.create(model="tessera", user=B_USER, max_tokens=2,
                                          messages=[{"role": "user", "content": "hi"}])
    assert chat.model_extra is not None
    assert chat.model_extra["tessera_revision"]["source"] == "base"
    text = client.completions.create(model="tessera", prompt="hi", user=B_USER, max_tokens=2)
    assert text.model_extra is not None
    assert text.model_extra["tessera_revision"]["revision_id"] is None
    as_b = OpenAI(base_url=f"{served.http}/v1", api_key=served.key_b, max_retries=0)
    mine = as_b.completions.create(model="tessera", prompt="hi", user=B_USER, max_tokens=2)
    assert mine.model_extra is not None
    assert mine.model_extra["tessera_revision"]["revision_id"] == served.b_revision_id


def test_openai_client_cannot_reach_admin_actions(served: Deployment) -> None:
    client = OpenAI(base_url=f"{served.http}/v1", api_key=served.key_a, max_retries=0)
    with pytest.raises(PermissionDeniedError):
        client.post(f"/admin/users/{TENANT_B}/{B_USER}/forget", body={"reason": "x"},
                    cast_to=httpx.Response)


# --- gRPC ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def channel(served: Deployment) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.grpc) as ch:
        yield ch


def _meta(key: str) -> tuple[tuple[str, str], ...]:
    return (("x-api-key", key),)


def _code(call: Callable[[], object]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        assert exc.details(), "a refusal must say why"
        code: grpc.StatusCode = exc.code()
        return code
    return grpc.StatusCode.OK


def test_grpc_admin_refuses_a_on_b(channel: grpc.Channel, served: Deployment) -> None:
    stub, meta = pb_grpc.AdminStub(channel), _meta(served.key_a)
    ref = pb.AdminUserRef(tenant_id=TENANT_B, user_id=B_USER)
    assert _code(lambda: stub.UserLineage(ref, metadata=meta)) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: stub.RevisionProvenance(
        pb.RevisionRef(revision_id=served.b_revision_id), metadata=meta)) == \
        grpc.StatusCode.NOT_FOUND
    assert _code(lambda: stub.RequestAudit(
        pb.RequestRef(request_id=served.b_request_id), metadata=meta)) == \
        grpc.StatusCode.NOT_FOUND
    rollback = pb.RollbackRequest(tenant_id=TENANT_B, user_id=B_USER, reason="x")
    forget = pb.ForgetRequest(tenant_id=TENANT_B, user_id=B_USER, reason="x")
    for key in (served.key_a, served.key_b):
        for call in (partial(stub.Rollback, rollback, metadata=_meta(key)),
                     partial(stub.Forget, forget, metadata=_meta(key))):
            assert _code(call) == grpc.StatusCode.PERMISSION_DENIED
    # B's key reads B's lineage: the refusal above is about the tenant.
    lineage = stub.UserLineage(ref, metadata=_meta(served.key_b))
    assert lineage.served_revision_id == served.b_revision_id


def test_grpc_generate_as_b_user_serves_only_a(channel: grpc.Channel,
                                                served: Deployment) -> None:
    stub = pb_grpc.InferenceStub(channel)
    request = pb.GenerateRequest(user_id=B_USER, prompt="hi", max_tokens=2)
    assert stub.Generate(request, metadata=_meta(served.key_a)).revision.source == "base"
    chunks = list(stub.GenerateStream(request, metadata=_meta(served.key_a)))
    assert {c.revision.revision_id for c in chunks} == {""}
    assert stub.Generate(request, metadata=_meta(served.key_b)).revision.revision_id == \
        served.b_revision_id


def test_grpc_ingest_files_under_the_keys_tenant(channel: grpc.Channel,
                                                 served: Deployment) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    item = pb.IngestItem(user_id=B_USER, occurred_at=Timestamp(seconds=1_767_225_600),
                         text=pb.Text(text="from A"))
    resp = pb_grpc.IngestStub(channel).Ingest(pb.IngestRequest(events=[item]),
                                              metadata=_meta(served.key_a))
    (event_id,) = resp.accepted
    deadline = time.monotonic() + 60
    row = None
    while row is None and time.monotonic() < deadline:
        with psycopg.connect(served.database_url) as conn:
            row = conn.execute("SELECT tenant_id FROM events WHERE event_id = %s",
                               (event_id,)).fetchone()
        time.sleep(0.3)
    assert row == (TENANT_A,)


def test_admin_key_is_not_a_tenant_key(served: Deployment) -> None:
    """The admin key audits and corrects; it is not a way to act as a tenant's user."""
    resp = httpx.post(f"{served.http}/v1/generate", headers=served.headers(ADMIN_KEY),
                      json={"user_id": B_USER, "prompt": "hi", "max_tokens": 2})
    assert resp.status_code == 401
