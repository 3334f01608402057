"""The ingest component of `tessera serve`: a Kafka publisher behind `IngestService`,
on HTTP (`routes/ingest.py`) and gRPC (`grpc_service`)."""

from __future__ import annotations

from tessera.events.kafka import ensure_topics
from tessera.events.kafka_publisher import KafkaPublisher
from tessera.services.components import Component, ServerContext
from tessera.services.ingest.admission import Admission, AdmissionConfig, postgres_durable_ids
from tessera.services.ingest.grpc_service import ingest_grpc_service
from tessera.services.ingest.service import IngestConfig, IngestService


def build_ingest(ctx: ServerContext) -> Component:
    """Ingest: a Kafka publisher behind `IngestService`, on HTTP and gRPC."""
    ensure_topics(ctx.stack.kafka_bootstrap, ctx.settings)
    bootstrap, settings = ctx.stack.kafka_bootstrap, ctx.settings
    publisher = KafkaPublisher(
        bootstrap,
        client_id="tessera-ingest",
        create_topics=lambda: ensure_topics(bootstrap, settings, timeout_s=10.0),
    )
    service = IngestService(
        publisher=publisher,
        config=IngestConfig.from_settings(ctx.settings),
        admission=_admission(ctx),
        quotas=ctx.quotas,
    )
    return Component(
        name="ingest",
        http_state={"ingest": service},
        grpc_services=[ingest_grpc_service(service=service, auth=ctx.auth)],
        close=service.close,
    )


def _admission(ctx: ServerContext) -> Admission | None:
    """Admission control when `ingest_max_lag_s` is set (off by default)."""
    if ctx.settings.ingest_max_lag_s <= 0:
        return None
    config = AdmissionConfig(
        max_lag_s=ctx.settings.ingest_max_lag_s, max_wait_s=ctx.settings.ingest_max_wait_s
    )
    return Admission(config, postgres_durable_ids(ctx.stack.database_url)).start()
