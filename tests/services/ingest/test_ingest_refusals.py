"""What the stream worker would refuse, the ingest API refuses first, with a 4xx that says
why (HTTP 422 / 413, gRPC INVALID_ARGUMENT): never a 202 for an event that is then
dead-lettered, nor a 503 "retry" for a record the broker can never take."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from tessera.infra.stack import StackInfo
from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.proto_gen import tessera_pb2_grpc as pb_grpc
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_server import start_grpc_server
from tessera.services.ingest.grpc_service import ERRORS_METADATA_KEY, ingest_grpc_service
from tessera.services.ingest.service import IngestService

from .conftest import ingest_app, read_topic

pytestmark = pytest.mark.integration

ACME = {"Authorization": "Bearer key-acme"}
AUTH = (("authorization", "Bearer key-acme"),)
# Long enough for a record past the broker's limit from a single text field.
BIG_TEXT_CHARS = 3_000_000


@pytest.fixture()
def settings(settings: Settings) -> Settings:
    """The package's settings with texts allowed long enough to build oversized records."""
    return settings.model_copy(update={"max_text_chars": BIG_TEXT_CHARS})


@pytest.fixture()
def client(ingest_service: IngestService, authenticator: KeyAuthenticator) -> Iterator[TestClient]:
    with TestClient(ingest_app(ingest=ingest_service, auth=authenticator)) as c:
        yield c


@pytest.fixture()
def stub(
    ingest_service: IngestService, authenticator: KeyAuthenticator
) -> Iterator[pb_grpc.IngestStub]:
    service = ingest_grpc_service(service=ingest_service, auth=authenticator)
    server = start_grpc_server([service], host="127.0.0.1", port=0)
    with grpc.insecure_channel(
        f"127.0.0.1:{server.port}", options=[("grpc.max_send_message_length", -1)]
    ) as ch:
        yield pb_grpc.IngestStub(ch)
    server.stop(grace_s=0.5)


def text_item(text: str, user: str = "u1", **over: Any) -> dict[str, Any]:
    item = {
        "type": "text",
        "user_id": user,
        "occurred_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "text": text,
    }
    return item | over


def _pb_text(text: str) -> pb.IngestItem:
    item = pb.IngestItem(user_id="u1", text=pb.Text(text=text))
    item.occurred_at.FromDatetime(datetime.now(UTC) - timedelta(seconds=10))
    return item


def _published_after(client: TestClient, stack: StackInfo, settings: Settings) -> list[uuid.UUID]:
    """Post a good marker batch; the event ids on the topic (only the marker's if the
    refused batch was not half-sent)."""
    marker = str(uuid.uuid4())
    ok = client.post("/v1/events", json={"events": [text_item("ok", event_id=marker)]},
                     headers=ACME)
    assert ok.status_code == 202, ok.text
    return [env.event_id for _, env in read_topic(stack.kafka_bootstrap,
                                                   settings.topic_interactions, expect=1)]


def test_nul_in_a_text_is_refused_with_422_naming_the_field(
    client: TestClient, stack: StackInfo, settings: Settings
) -> None:
    items = [text_item("fine"), text_item("ok", context=[{"role": "user", "text": "a\u0000b"}])]
    resp = client.post("/v1/events", json={"events": items}, headers=ACME)
    assert resp.status_code == 422, resp.text
    (error,) = resp.json()["errors"]
    assert (error["index"], error["field"], error["type"]) == (1, "context[0].text", "string_nul")
    assert "NUL" in error["problem"]
    assert len(_published_after(client, stack, settings)) == 1


def test_nul_over_grpc_is_invalid_argument(stub: pb_grpc.IngestStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.Ingest(pb.IngestRequest(events=[_pb_text("x\x00y")]), metadata=AUTH, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "events[0].text" in info.value.details() and "NUL" in info.value.details()
    errors = json.loads(dict(info.value.trailing_metadata())[ERRORS_METADATA_KEY])
    assert [(e["index"], e["field"], e["type"]) for e in errors] == [(0, "text", "string_nul")]


def test_a_record_over_the_broker_limit_is_refused_with_413(
    client: TestClient, stack: StackInfo, settings: Settings
) -> None:
    big = "x" * (settings.max_record_bytes + 1)
    items = [text_item("fine"), text_item(big)]
    resp = client.post("/v1/events", json={"events": items}, headers=ACME)
    assert resp.status_code == 413, resp.text
    (error,) = resp.json()["errors"]
    assert (error["index"], error["field"], error["type"]) == (1, "item", "record_too_large")
    assert str(settings.max_record_bytes) in error["problem"]
    assert len(_published_after(client, stack, settings)) == 1
    # Just under the limit is accepted (and the broker takes it).
    envelope_overhead = 400
    fits = "y" * (settings.max_record_bytes - envelope_overhead)
    resp = client.post("/v1/events", json={"events": [text_item(fits)]}, headers=ACME)
    assert resp.status_code == 202, resp.text


def test_a_record_over_the_limit_over_grpc_is_invalid_argument(
    stub: pb_grpc.IngestStub, settings: Settings
) -> None:
    big = "x" * (settings.max_record_bytes + 1)
    with pytest.raises(grpc.RpcError) as info:
        stub.Ingest(pb.IngestRequest(events=[_pb_text(big)]), metadata=AUTH, timeout=20)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too large" in info.value.details()
