"""Per-tenant ingest quotas on the real app, broker and tenants table: a tenant pushed
past its events per second gets 429 with Retry-After (gRPC RESOURCE_EXHAUSTED) while
another tenant's batches, sent at the same time, are all accepted promptly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import httpx
import psycopg
import pytest
from fastapi import FastAPI
from google.protobuf.timestamp_pb2 import Timestamp

from tessera.events import tenants
from tessera.events.kafka import ensure_topics
from tessera.events.kafka_publisher import KafkaPublisher
from tessera.infra.stack import StackInfo
from tessera.schemas.proto_gen import tessera_pb2, tessera_pb2_grpc
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator, authenticator_from_database
from tessera.services.grpc_server import start_grpc_server
from tessera.services.http_app import create_app
from tessera.services.ingest.grpc_service import ingest_grpc_service
from tessera.services.ingest.service import IngestConfig, IngestService
from tessera.services.quotas import quotas_from_settings

from .conftest import ADMIN_KEY

A_EVENTS_PER_S = 10.0  # A's own quota; B has the (generous) default
BATCH = 5


@dataclass
class Served:
    app: FastAPI
    auth: KeyAuthenticator
    service: IngestService
    key_a: str
    key_b: str


@pytest.fixture()
def served(stack: StackInfo, database_url: str, settings: Settings) -> Iterator[Served]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        tenants.create_tenant(conn, "acme")
        tenants.create_tenant(conn, "globex")
        key_a = tenants.issue_api_key(conn, "acme")
        key_b = tenants.issue_api_key(conn, "globex")
        tenants.set_quota(conn, "acme", tenants.TenantQuota(ingest_events_per_s=A_EVENTS_PER_S))
    ensure_topics(stack.kafka_bootstrap, settings)
    service = IngestService(
        publisher=KafkaPublisher(stack.kafka_bootstrap, client_id="test-quotas"),
        config=IngestConfig.from_settings(settings),
        quotas=quotas_from_settings(settings, database_url),  # as `tessera serve` builds it
    )
    auth = authenticator_from_database(database_url, admin_key=ADMIN_KEY)
    yield Served(create_app(auth=auth, ingest=service), auth, service, key_a, key_b)
    service.close()


def _batch(user: str) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {"events": [{"type": "text", "user_id": user, "occurred_at": now, "text": f"t{i}"}
                       for i in range(BATCH)]}


def test_a_tenant_past_its_quota_gets_429_while_another_is_served(served: Served) -> None:
    async def run() -> tuple[list[httpx.Response], list[tuple[httpx.Response, float]]]:
        transport = httpx.ASGITransport(app=served.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t",
                                     timeout=30) as client:
            async def a() -> httpx.Response:
                return await client.post("/v1/events", json=_batch("alice"),
                                         headers={"X-API-Key": served.key_a})

            async def b_in_turn() -> list[tuple[httpx.Response, float]]:
                out = []
                for _ in range(10):
                    started = time.monotonic()
                    resp = await client.post("/v1/events", json=_batch("bob"),
                                             headers={"X-API-Key": served.key_b})
                    out.append((resp, time.monotonic() - started))
                return out

            a_task = asyncio.gather(*(a() for _ in range(40)))
            b = await b_in_turn()
            return list(await a_task), b

    a, b = asyncio.run(run())
    a_codes = [r.status_code for r in a]
    # A's burst (2 s of 10 events/s = 4 batches of 5) passes; the rest are refused.
    # (A few more may pass as the bucket refills while the 40 are being answered.)
    assert set(a_codes) <= {202, 429} and a_codes.count(429) >= 25, a_codes
    assert 1 <= a_codes.count(202) <= 12, a_codes
    for resp in a:
        if resp.status_code == 429:
            assert int(resp.headers["retry-after"]) >= 1
            assert "quota of 10 ingested events per second" in resp.json()["detail"]
    # B is neither refused nor held up by A being at its limit.
    assert [r.status_code for r, _ in b] == [202] * 10, [r.text for r, _ in b]
    assert max(s for _, s in b) < 5.0, [round(s, 2) for _, s in b]


def test_grpc_ingest_past_the_quota_is_resource_exhausted(served: Served) -> None:
    running = start_grpc_server(
        [ingest_grpc_service(service=served.service, auth=served.auth)], host="127.0.0.1", port=0
    )
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = tessera_pb2_grpc.IngestStub(channel)
            now = Timestamp()
            now.GetCurrentTime()
            request = tessera_pb2.IngestRequest(events=[
                tessera_pb2.IngestItem(user_id="alice", occurred_at=now,
                                       text=tessera_pb2.Text(text="hi"))
                for _ in range(int(A_EVENTS_PER_S * 2))  # all of A's burst
            ])
            stub.Ingest(request, metadata=(("x-api-key", served.key_a),))
            with pytest.raises(grpc.RpcError) as err:
                stub.Ingest(request, metadata=(("x-api-key", served.key_a),))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "quota" in (err.value.details() or "")
            stub.Ingest(request, metadata=(("x-api-key", served.key_b),))  # B: accepted
    finally:
        running.stop(0.5)
