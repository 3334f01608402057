"""hypothesis-generated messages against the real gRPC server (Ingest, Inference, Admin):
whatever arrives, the answer is OK or a deliberate status (never INTERNAL or UNKNOWN,
which is what an unhandled exception becomes), and every error carries its reason."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.proto_gen import tessera_pb2_grpc as pb_grpc

from .served import ADMIN_KEY, TENANT_A, TENANT_B, Deployment

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20")) * 2
CRASH_CODES = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

# Protobuf strings must be valid UTF-8, so surrogates are left out; everything else
# (NUL, control characters, RTL marks, astral planes) is fair game.
text = st.text(st.characters(codec="utf-8"), max_size=300)
hostile = st.sampled_from(["../../etc/passwd", "'; DROP TABLE events;--", "\x00", "bob",
                           TENANT_B, "~prior", "%s%n", "a" * 5000])
ids = st.one_of(text, hostile, st.uuids().map(str))
uint32 = st.integers(0, 2**32 - 1)
floats = st.floats(width=32, allow_nan=True, allow_infinity=True)


def timestamps() -> st.SearchStrategy[Timestamp]:
    # The full range protobuf allows, and some of what it does not (seconds < 0001).
    return st.builds(Timestamp, seconds=st.integers(-(2**40), 2**40),
                     nanos=st.integers(0, 10**9 - 1))


turns = st.lists(st.builds(pb.Turn, role=st.one_of(text, st.sampled_from(["user", "other"])),
                           text=text), max_size=3)
payloads: st.SearchStrategy[dict[str, Any]] = st.one_of(
    st.builds(lambda p, r, c: {"exchange": pb.Exchange(prompt=p, response=r, context=c)},
              text, text, turns),
    st.builds(lambda t, r, e: {"feedback": pb.Feedback(target_event_id=t, rating=r,
                                                       edited_response=e)},
              ids, st.integers(-(2**31), 2**31 - 1), text),
    st.builds(lambda t, c: {"text": pb.Text(text=t, context=c)}, text, turns),
    st.just({}),  # no payload at all
)
items = st.builds(
    lambda eid, uid, ts, cid, payload: pb.IngestItem(
        event_id=eid, user_id=uid, occurred_at=ts, correlation_id=cid, **payload),
    st.one_of(st.just(""), ids), ids, timestamps(), st.one_of(st.just(""), ids), payloads,
)
generate_requests = st.builds(
    pb.GenerateRequest,
    user_id=ids, prompt=text, max_tokens=uint32, temperature=floats,
    top_p=st.one_of(st.none(), floats), seed=st.one_of(st.none(), st.integers(0, 2**64 - 1)),
    stop=st.lists(text, max_size=4), timeout_s=st.floats(0, 60, width=32),
)


@pytest.fixture(scope="module")
def channel(served: Deployment) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(served.grpc) as ch:
        yield ch


def _meta(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def assert_handled(call: Callable[[], Any]) -> None:
    """`call` answers, or fails with a deliberate status and a reason."""
    try:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    except grpc.RpcError as exc:
        code, details = exc.code(), exc.details()
        assert code not in CRASH_CODES, f"{code}: {details}"
        assert details, f"{code} without a reason"


FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(batch=st.lists(items, max_size=5))
def test_ingest_never_crashes(channel: grpc.Channel, served: Deployment,
                              batch: list[pb.IngestItem]) -> None:
    stub = pb_grpc.IngestStub(channel)
    assert_handled(lambda: stub.Ingest(pb.IngestRequest(events=batch), metadata=_meta(
        served.key_a), timeout=60))


@FUZZ
@given(request=generate_requests, stream=st.booleans())
def test_inference_never_crashes(channel: grpc.Channel, served: Deployment,
                                 request: pb.GenerateRequest, stream: bool) -> None:
    stub = pb_grpc.InferenceStub(channel)
    method = stub.GenerateStream if stream else stub.Generate
    assert_handled(lambda: method(request, metadata=_meta(served.key_a), timeout=60))


# NUL in admin ids has its own test (test_nul_in_admin_ids.py): left out
# here so this test keeps guarding everything else.
admin_ids = ids.map(lambda s: s.replace("\x00", ""))


@FUZZ
@given(tenant=st.one_of(admin_ids, st.just(TENANT_A)), user=admin_ids, ref=admin_ids, reason=text,
       key=st.sampled_from(["admin", "a", "bogus"]))
def test_admin_never_crashes(channel: grpc.Channel, served: Deployment, tenant: str,
                             user: str, ref: str, reason: str, key: str) -> None:
    stub = pb_grpc.AdminStub(channel)
    meta = _meta({"admin": ADMIN_KEY, "a": served.key_a, "bogus": "tsk_x_y"}[key])
    user_ref = pb.AdminUserRef(tenant_id=tenant, user_id=user)
    assert_handled(lambda: stub.UserLineage(user_ref, metadata=meta, timeout=30))
    assert_handled(lambda: stub.RevisionProvenance(pb.RevisionRef(revision_id=ref),
                                                   metadata=meta, timeout=30))
    assert_handled(lambda: stub.RequestAudit(pb.RequestRef(request_id=ref), metadata=meta,
                                             timeout=30))
    if tenant != TENANT_B:  # B's data is the isolation tests' witness; keep it
        assert_handled(lambda: stub.Rollback(pb.RollbackRequest(
            tenant_id=tenant, user_id=user, to_revision_id=ref, reason=reason),
            metadata=meta, timeout=30))
        assert_handled(lambda: stub.Forget(pb.ForgetRequest(
            tenant_id=tenant, user_id=user, reason=reason), metadata=meta, timeout=30))


def test_huge_batch_count_is_refused_with_the_limit(channel: grpc.Channel,
                                                     served: Deployment) -> None:
    item = pb.IngestItem(user_id="u1", occurred_at=Timestamp(seconds=1_767_225_600),
                         text=pb.Text(text="x"))
    stub = pb_grpc.IngestStub(channel)
    with pytest.raises(grpc.RpcError) as info:
        stub.Ingest(pb.IngestRequest(events=[item] * 5000), metadata=_meta(served.key_a),
                    timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000" in (info.value.details() or "")


def test_server_survived(served: Deployment) -> None:
    served.assert_alive()
