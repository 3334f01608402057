"""gRPC tessera.v1.Ingest against the real broker, through a real server: same rules as
HTTP, errors as status codes, plus health and reflection."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tessera.infra.stack import StackInfo
from tessera.schemas.events import EventType
from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.proto_gen import tessera_pb2_grpc as pb_grpc
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_server import start_grpc_server
from tessera.services.ingest.grpc_service import ERRORS_METADATA_KEY, ingest_grpc_service
from tessera.services.ingest.service import IngestService

from .conftest import read_topic

pytestmark = pytest.mark.integration

AUTH = (("authorization", "Bearer key-acme"),)


@pytest.fixture()
def channel(
    ingest_service: IngestService, authenticator: KeyAuthenticator
) -> Iterator[grpc.Channel]:
    service = ingest_grpc_service(service=ingest_service, auth=authenticator)
    server = start_grpc_server([service], host="127.0.0.1", port=0)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        yield ch
    server.stop(grace_s=0.5)


def _item(user: str = "u1", **over: object) -> pb.IngestItem:
    item = pb.IngestItem(
        user_id=user,
        exchange=pb.Exchange(
            prompt="hi", response="hello there", context=[pb.Turn(role="other", text="hey")]
        ),
    )
    item.occurred_at.FromDatetime(datetime.now(UTC) - timedelta(seconds=10))
    for key, value in over.items():
        setattr(item, key, value)
    return item


def test_ingest_publishes_with_tenant_key(
    channel: grpc.Channel, stack: StackInfo, settings: Settings
) -> None:
    own = uuid.uuid4()
    text_item = pb.IngestItem(user_id="bob", text=pb.Text(text="a note"))
    text_item.occurred_at.FromDatetime(datetime.now(UTC))
    request = pb.IngestRequest(events=[_item("alice", event_id=str(own)), text_item])
    reply = pb_grpc.IngestStub(channel).Ingest(request, metadata=AUTH, timeout=10)
    assert reply.accepted[0] == str(own) and len(reply.accepted) == 2

    records = read_topic(stack.kafka_bootstrap, settings.topic_interactions, expect=2)
    by_id = {str(env.event_id): (key, env) for key, env in records}
    assert set(by_id) == set(reply.accepted)
    key, env = by_id[str(own)]
    assert (key, env.event_type) == (b"acme/alice", EventType.EXCHANGE)
    assert env.data == {
        "prompt": "hi",
        "response": "hello there",
        "context": [{"role": "other", "text": "hey"}],
    }
    assert by_id[reply.accepted[1]][1].data == {"text": "a note", "context": []}


def test_invalid_batch_is_invalid_argument_listing_items(channel: grpc.Channel) -> None:
    no_payload = pb.IngestItem(user_id="u1")
    no_payload.occurred_at.FromDatetime(datetime.now(UTC))
    no_time = _item()
    no_time.ClearField("occurred_at")
    request = pb.IngestRequest(events=[_item(), no_payload, no_time, _item(event_id="nope")])
    with pytest.raises(grpc.RpcError) as info:
        pb_grpc.IngestStub(channel).Ingest(request, metadata=AUTH, timeout=10)
    err = info.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[2].occurred_at" in err.details()
    trailing = dict(err.trailing_metadata())
    errors = json.loads(trailing[ERRORS_METADATA_KEY])
    assert [(e["index"], e["field"]) for e in errors] == [
        (1, "type"),
        (2, "occurred_at"),
        (3, "event_id"),
    ]


def test_unknown_key_is_unauthenticated(channel: grpc.Channel) -> None:
    request = pb.IngestRequest(events=[_item()])
    for metadata in [(), (("x-api-key", "wrong"),)]:
        with pytest.raises(grpc.RpcError) as info:
            pb_grpc.IngestStub(channel).Ingest(request, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_health_and_reflection(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    status = health.Check(health_pb2.HealthCheckRequest(service="tessera.v1.Ingest"), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING

    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5
    )
    names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert "tessera.v1.Ingest" in names
