"""gRPC handlers must not be held by one caller's stalled work (issue #13): ingest gives
up when the client's deadline passes (DEADLINE_EXCEEDED, its thread freed), and the
server's pool outnumbers a full inference batch. The broker is a private Tansu, stopped
with SIGSTOP to stall acknowledgements the way a hung broker does."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tessera.events.kafka import ensure_topics
from tessera.events.kafka_publisher import KafkaPublisher
from tessera.infra.stack import Broker
from tessera.schemas.proto_gen import tessera_pb2 as pb
from tessera.schemas.proto_gen import tessera_pb2_grpc as pb_grpc
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_server import GrpcLimits, RunningGrpcServer, start_grpc_server
from tessera.services.ingest.grpc_service import ingest_grpc_service
from tessera.services.ingest.service import DeadlineExceeded, IngestConfig, IngestService

pytestmark = pytest.mark.integration

AUTH = (("authorization", "Bearer key-acme"),)


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Broker]:
    own = Broker(tmp_path / "broker")
    own.start()
    yield own
    pid = own.pid()
    if pid is not None:
        os.kill(pid, signal.SIGCONT)  # in case a test failed while it was stopped
    own.stop()


@pytest.fixture()
def service(broker: Broker, tmp_path: Path) -> Iterator[IngestService]:
    settings = Settings(topic_partitions=1, state_dir=tmp_path / "state")
    ensure_topics(broker.bootstrap, settings)
    publisher = KafkaPublisher(broker.bootstrap, client_id="test-deadline")
    svc = IngestService(publisher=publisher, config=IngestConfig.from_settings(settings))
    yield svc
    svc.close()


@contextmanager
def stalled(broker: Broker) -> Iterator[None]:
    """The broker process stopped: connections stay open, nothing is acknowledged."""
    pid = broker.pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@contextmanager
def serving(svc: IngestService, auth: KeyAuthenticator, limits: GrpcLimits) -> Iterator[str]:
    running: RunningGrpcServer = start_grpc_server(
        [ingest_grpc_service(service=svc, auth=auth)], host="127.0.0.1", port=0, limits=limits
    )
    try:
        yield f"127.0.0.1:{running.port}"
    finally:
        running.stop(0.5)


def _request() -> pb.IngestRequest:
    item = pb.IngestItem(user_id="u1", text=pb.Text(text="a note"))
    item.occurred_at.FromDatetime(datetime.now(UTC))
    return pb.IngestRequest(events=[item])


def _ingest_calls(target: str, n: int, deadline_s: float) -> tuple[list[threading.Thread],
                                                                  list[grpc.StatusCode]]:
    codes: list[grpc.StatusCode] = []

    def call() -> None:
        with grpc.insecure_channel(target) as channel:
            try:
                pb_grpc.IngestStub(channel).Ingest(_request(), metadata=AUTH, timeout=deadline_s)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())

    threads = [threading.Thread(target=call, daemon=True) for _ in range(n)]
    for t in threads:
        t.start()
    return threads, codes


def _health_answers(target: str, within_s: float) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=within_s
            )
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED, exc
            return False
    return True


def test_ingest_gives_up_at_the_callers_deadline(service: IngestService, broker: Broker) -> None:
    body = {"events": [{"type": "text", "user_id": "u1",
                        "occurred_at": datetime.now(UTC).isoformat(), "text": "hi"}]}
    assert service.ingest(body, tenant_id="acme", deadline_s=10)  # the broker works
    with stalled(broker):
        started = time.monotonic()
        with pytest.raises(DeadlineExceeded):
            service.ingest(body, tenant_id="acme", deadline_s=0.5)
        assert time.monotonic() - started < 3  # not the 30 s ack timeout


def test_grpc_ingest_frees_its_thread_when_the_client_deadline_passes(
    service: IngestService, broker: Broker
) -> None:
    auth = KeyAuthenticator(lookup={"key-acme": "acme"}.get, admin_key="admin", cache_ttl_s=60)
    with serving(service, auth, GrpcLimits(workers=2)) as target, stalled(broker):
        threads, codes = _ingest_calls(target, 2, deadline_s=1.0)  # both threads taken
        for t in threads:
            t.join(10)
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
        # Their handlers gave up with them: the pool serves the next call at once, not
        # after the service's own 30 s wait for the broker.
        assert _health_answers(target, within_s=3.0)


def test_the_pool_outnumbers_a_full_batch(service: IngestService, broker: Broker) -> None:
    """As many stalled calls as a full inference batch (the old fixed pool's size)
    still leave threads for every other call on the server."""
    settings = Settings(inference_max_batch=16)
    limits = GrpcLimits.from_settings(settings)
    assert limits.workers >= settings.inference_max_batch + 1
    assert limits.max_message_bytes == settings.max_body_bytes
    auth = KeyAuthenticator(lookup={"key-acme": "acme"}.get, admin_key="admin", cache_ttl_s=60)
    for workers, answers in ((settings.inference_max_batch, False), (limits.workers, True)):
        with serving(service, auth, replace_workers(limits, workers)) as target, stalled(broker):
            threads, _ = _ingest_calls(target, settings.inference_max_batch, deadline_s=6.0)
            time.sleep(1.0)  # every call is in its handler, waiting for the broker
            assert _health_answers(target, within_s=2.0) is answers, workers
            for t in threads:
                t.join(15)


def replace_workers(limits: GrpcLimits, workers: int) -> GrpcLimits:
    return GrpcLimits(workers=workers, max_message_bytes=limits.max_message_bytes)
