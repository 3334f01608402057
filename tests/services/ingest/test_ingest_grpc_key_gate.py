"""gRPC keyed calls without a usable key are refused before their message is decoded
(services/grpc_auth_gate.py): the proof is a request that is not protobuf at all, which
the gate answers UNAUTHENTICATED while a call past the gate fails decoding it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import grpc
import psycopg
import pytest

from tessera.events import tenants
from tessera.services.auth import KeyAuthenticator, authenticator_from_database
from tessera.services.grpc_auth_gate import KeyGateInterceptor
from tessera.services.grpc_server import start_grpc_server
from tessera.services.ingest.grpc_service import ingest_grpc_service
from tessera.services.ingest.service import IngestService

from .conftest import ADMIN_KEY

NOT_PROTOBUF = b"\xff\xff\xff\xff" * 1024  # an invalid tag: decoding it fails at once


@pytest.fixture()
def database_auth(database_url: str) -> tuple[KeyAuthenticator, str]:
    with psycopg.connect(database_url, autocommit=True) as conn:
        tenants.create_tenant(conn, "acme")
        key = tenants.issue_api_key(conn, "acme")
    return authenticator_from_database(database_url, admin_key=ADMIN_KEY), key


@pytest.fixture()
def channel(
    ingest_service: IngestService, database_auth: tuple[KeyAuthenticator, str]
) -> Iterator[grpc.Channel]:
    auth, _ = database_auth
    running = start_grpc_server(
        [ingest_grpc_service(service=ingest_service, auth=auth)],
        host="127.0.0.1",
        port=0,
        interceptors=[KeyGateInterceptor(auth)],
    )
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as ch:
        yield ch
    running.stop(0.5)


def _raw_ingest(channel: grpc.Channel, payload: bytes, key: str | None) -> grpc.StatusCode:
    call = channel.unary_unary("/tessera.v1.Ingest/Ingest")  # bytes in, bytes out
    metadata = () if key is None else (("x-api-key", key),)
    try:
        call(payload, metadata=metadata, timeout=30)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_no_or_malformed_key_is_refused_before_the_message_is_decoded(
    channel: grpc.Channel, database_auth: tuple[KeyAuthenticator, str]
) -> None:
    for key in (None, "not-a-key", "tsk_nothing"):
        assert _raw_ingest(channel, NOT_PROTOBUF, key) == grpc.StatusCode.UNAUTHENTICATED
    # Past the gate (a valid key), the same bytes do get decoded, and fail there.
    _, valid = database_auth
    assert _raw_ingest(channel, NOT_PROTOBUF, valid) != grpc.StatusCode.UNAUTHENTICATED


def test_a_key_that_just_failed_is_refused_at_the_gate(channel: grpc.Channel) -> None:
    unknown = f"tsk_{secrets.token_hex(6)}_{secrets.token_urlsafe(32)}"
    # First call: only the database can tell, so the handler decodes and looks it up.
    assert _raw_ingest(channel, b"", unknown) == grpc.StatusCode.UNAUTHENTICATED
    # Now its failure is remembered: refused before decoding.
    assert _raw_ingest(channel, NOT_PROTOBUF, unknown) == grpc.StatusCode.UNAUTHENTICATED
