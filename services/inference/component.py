"""The inference component of `tessera serve`: base model, adapters, engine, hot swap.

Loads the base model once, wraps it with multi-LoRA layers, serves adapters from the
local content-addressed store, resolves who gets which revision from the event store's
projections, follows `tessera.revisions`, and records request -> revision in
`request_log` (a sampled share). Routes find the engine as `app.state.inference`.
"""

from __future__ import annotations

import logging

from tessera.events.kafka import ensure_topics
from tessera.services.components import Component, ServerContext
from tessera.services.inference.build import build_engine, torch_dtype
from tessera.services.inference.prefetch import KafkaPrefetcher, Prefetcher
from tessera.services.inference.request_log import PostgresRequestLog
from tessera.services.inference.revision_follower import KafkaRevisionFollower, RevisionFollower
from tessera.services.inference.revisions import Lookup, PinLookup, Served
from tessera.services.inference.tokens import as_hf_tokenizer

log = logging.getLogger(__name__)


def projection_lookup(database_url: str, *, pool_size: int = 4) -> Lookup:
    """`lookup(tenant, user)` answered by the event store's projections (its own pool):
    `events.catalog.served_revision`'s rule, in one statement."""
    from tessera.events.postgres_store import PostgresEventStore

    store = PostgresEventStore(database_url, pool_size=pool_size)

    def lookup(tenant_id: str, user_id: str) -> Served:
        s = store.served(tenant_id, user_id)
        return Served(s.revision_id, s.adapter_digest, s.source)

    return lookup


def projection_pin_lookup(database_url: str) -> PinLookup:
    """`pin_lookup(tenant, user, revision)` from the revision catalog: the revision must be
    that user's in that tenant and have passed the gate once (promoted, superseded or
    rolled back); trained-only, rejected and forgotten ones are not served."""
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.schemas.events import PRIOR_USER_ID, RevisionState

    servable = {RevisionState.PROMOTED, RevisionState.SUPERSEDED, RevisionState.ROLLED_BACK}
    store = PostgresEventStore(database_url, pool_size=2)

    def pin(tenant_id: str, user_id: str, revision_id: str) -> Served | None:
        row = store.get_revision(revision_id)
        if row is None or (row.tenant_id, row.user_id) != (tenant_id, user_id):
            return None
        if row.state not in servable:
            return None
        return Served(
            row.revision_id, row.adapter_digest, "prior" if user_id == PRIOR_USER_ID else "personal"
        )

    return pin


def build_component(ctx: ServerContext) -> Component:
    """Everything inference needs, started; `close` stops it in reverse order."""
    from tessera.services.grpc_inference import inference_grpc_service
    from tessera.workers.adapter_store import LocalAdapterStore
    from tessera.workers.base_model import load_base_model, resolve_base_model

    settings = ctx.settings
    info = resolve_base_model(settings)
    model, tokenizer = load_base_model(info, dtype=torch_dtype(settings.inference_dtype))
    request_log = PostgresRequestLog(
        ctx.stack.database_url, share=settings.inference_request_log_share
    )
    engine = build_engine(
        model,
        as_hf_tokenizer(tokenizer),
        LocalAdapterStore(settings.adapter_store_dir),
        projection_lookup(ctx.stack.database_url),
        settings=settings,
        request_log=request_log,
        quotas=ctx.quotas,
        pin_lookup=projection_pin_lookup(ctx.stack.database_url),
        model_id=info.model_id,
    ).start()
    ensure_topics(ctx.stack.kafka_bootstrap, settings)
    follower = KafkaRevisionFollower(
        RevisionFollower(engine.resolver, engine.residency),
        bootstrap=ctx.stack.kafka_bootstrap,
        topic=settings.topic_revisions,
    ).start()
    prefetch: KafkaPrefetcher | None = None
    if settings.inference_prefetch != "off":
        prefetch = KafkaPrefetcher(
            Prefetcher(engine.resolver, engine.loader, scope=settings.inference_prefetch),
            bootstrap=ctx.stack.kafka_bootstrap,
            topic=settings.topic_interactions,
        ).start()
    log.info("inference: %s with %d adapter slots", info.model_id, settings.inference_device_slots)

    def close() -> None:
        if prefetch is not None:
            prefetch.stop()
        follower.stop()
        engine.stop()
        request_log.close()

    return Component(
        name="inference",
        http_state={"inference": engine},
        grpc_services=[inference_grpc_service(engine=engine, auth=ctx.auth)],
        close=close,
    )
