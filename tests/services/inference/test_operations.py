"""Operations: `/metrics` after a request, `/readyz` against real and unreachable backends,
gRPC health following readiness, JSON log lines with request ids, ingest worker metrics."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tessera.events.stream_metrics import SinkCollector, record_lag, serve_metrics
from tessera.events.stream_sink import SinkStats
from tessera.infra.stack import StackInfo, free_port
from tessera.schemas.settings import Settings
from tessera.services.components import ServerContext
from tessera.services.grpc_server import start_grpc_server
from tessera.services.http_app import create_app
from tessera.services.inference.engine import InferenceEngine
from tessera.services.observability.grpc_health import HealthFollower
from tessera.services.observability.readiness import Check, Readiness, backend_checks
from tessera.services.server import http_app_for
from tessera.workers.json_logs import configure_logging

from .servers import authenticator, http_server

AUTH = {"Authorization": "Bearer key-t1"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_expose_the_named_series_after_a_request(
    engine: InferenceEngine, json_log: io.StringIO
) -> None:
    with http_server(engine) as url:
        before = _samples(httpx.get(f"{url}/metrics").text)
        body = {"user_id": "ann", "prompt": "Hello there", "max_tokens": 6}
        r = httpx.post(f"{url}/v1/generate", json=body, headers=AUTH, timeout=30)
        assert r.status_code == 200, r.text
        page = httpx.get(f"{url}/metrics")
    assert page.headers["content-type"].startswith("text/plain")
    after = _samples(page.text)

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    route = {"route": "/v1/generate", "method": "POST"}
    assert delta("tessera_http_requests_total", **route, status="200") == 1
    assert delta("tessera_http_request_seconds_count", **route) == 1
    tokens = r.json()["usage"]["completion_tokens"]
    assert delta("tessera_inference_tokens_generated_total") == tokens
    assert delta("tessera_inference_ttft_seconds_count") == 1
    assert delta("tessera_inference_time_per_output_token_seconds_count") == 1
    assert ("tessera_inference_queue_depth", ()) in after
    residency = sum(delta("tessera_adapter_residency_total", event=e) for e in ("hit", "load"))
    assert residency >= 1  # ann's adapter was loaded or already resident
    assert ("tessera_adapter_residency_total", (("event", "miss"),)) in after
    # the access log line names the request and the revision that answered
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    (line,) = [x for x in lines if x.get("route") == "/v1/generate"]
    assert line["request_id"] == r.headers["x-request-id"]
    assert line["revision_id"] == r.headers["x-tessera-revision"] == "rev-ann-1"


def _ready(app_readiness: Readiness) -> tuple[int, dict[str, Any]]:
    app = create_app(auth=authenticator(), readiness=app_readiness)
    with TestClient(app) as client:
        r = client.get("/readyz")
        assert client.get("/healthz").status_code == 200  # liveness is not readiness
    return r.status_code, r.json()


def test_readyz_names_the_failed_dependency(stack: StackInfo, engine: InferenceEngine) -> None:
    status, body = _ready(
        Readiness(
            backend_checks(stack.database_url, stack.kafka_bootstrap, timeout_s=5.0, engine=engine)
        )
    )
    assert (status, body["failed"]) == (200, []), body
    assert set(body["checks"]) == {"postgres", "broker", "model"}
    closed = f"postgresql://tessera@127.0.0.1:{free_port()}/tessera"
    status, body = _ready(
        Readiness(backend_checks(closed, stack.kafka_bootstrap, timeout_s=2.0, engine=engine))
    )
    assert (status, body["failed"]) == (503, ["postgres"]), body
    engine.stop()
    status, body = _ready(
        Readiness(
            backend_checks(
                stack.database_url, f"127.0.0.1:{free_port()}", timeout_s=1.0, engine=engine
            )
        )
    )
    assert (status, body["failed"]) == (503, ["broker", "model"]), body


def test_grpc_health_follows_readiness() -> None:
    up = [False]

    def probe() -> None:
        if not up[0]:
            raise ConnectionError("postgres down")

    readiness = Readiness([Check("postgres", probe)], cache_s=0)
    server = start_grpc_server([], host="127.0.0.1", port=0)
    follower = HealthFollower(readiness, server.health, [], interval_s=60).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            request = health_pb2.HealthCheckRequest(service="")
            assert stub.Check(request).status == health_pb2.HealthCheckResponse.NOT_SERVING
            up[0] = True
            assert follower.update()
            assert stub.Check(request).status == health_pb2.HealthCheckResponse.SERVING
    finally:
        follower.stop()
        server.stop(0)


@pytest.fixture()
def json_log() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    buf = io.StringIO()
    configure_logging(json_logs=True, stream=buf)
    yield buf
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_json_log_lines_carry_the_request_id(json_log: io.StringIO) -> None:
    app = create_app(auth=authenticator())
    with TestClient(app) as client:
        given = client.get("/v1/models", headers={"X-Request-ID": "req-42"})
        fresh = client.post("/v1/generate", json={})
    assert given.status_code == 401 and given.headers["x-request-id"] == "req-42"
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    http = [line for line in lines if line["logger"] == "tessera.http"]
    assert {"request_id": "req-42", "route": "/v1/models", "status": 401}.items() <= http[0].items()
    assert http[1]["request_id"] == fresh.headers["x-request-id"] != "req-42"
    assert {"ts", "level", "msg"} <= http[0].keys()


def test_ingest_worker_metrics() -> None:
    stats = SinkStats(appended=5, duplicates=2, rejected=1, batches=3)
    registry = CollectorRegistry()
    registry.register(SinkCollector(stats))
    stats.appended += 1  # read at scrape time, not copied
    text = generate_latest(registry).decode()
    assert 'tessera_ingest_records_total{outcome="stored"} 6.0' in text
    assert 'tessera_ingest_records_total{outcome="rejected"} 1.0' in text
    record_lag({0: 10, 1: 3}, {0: 6})
    port = free_port()
    serve_metrics(stats, port)
    page = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    assert 'tessera_ingest_consumer_lag{partition="0"} 3.0' in page
    assert 'tessera_ingest_consumer_lag{partition="1"} 3.0' in page
    assert 'tessera_ingest_records_total{outcome="stored"} 6.0' in page


def test_the_served_app_checks_its_backends(stack: StackInfo) -> None:
    settings = Settings(readiness_timeout_s=5.0)
    ctx = ServerContext(settings=settings, stack=stack, auth=authenticator(), quotas=None)
    with TestClient(http_app_for(ctx, [])) as client:
        r = client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"] == {"postgres": "ok", "broker": "ok"}  # no inference here
