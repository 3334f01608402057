"""The `training` server component: the training API (HTTP and gRPC) and the webhook
routes, on PostgreSQL, the local adapter store and the training-requests topic.

Found by `services.components.OPTIONAL_COMPONENTS["training"]`; `tessera serve` builds
it unless started with `--without training`. No model is loaded here: imports are
staged and the trainer group gates them.
"""

from __future__ import annotations

from tessera.services.components import Component, ServerContext
from tessera.services.grpc_training import training_grpc_service
from tessera.services.training_api import TrainingApi
from tessera.workers.training_request import TrainingRequest


def build_component(ctx: ServerContext) -> Component:
    """The API on PostgreSQL, the local adapter store and the training-requests topic."""
    from tessera.events.kafka import ensure_topics
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.events.webhooks import PostgresWebhookStore
    from tessera.workers.adapter_import import import_target
    from tessera.workers.adapter_store import LocalAdapterStore
    from tessera.workers.base_model import resolve_base_model
    from tessera.workers.runtime import pipeline_config
    from tessera.workers.scheduler_state import SchedulerState
    from tessera.workers.train_worker import send_requests

    settings, stack = ctx.settings, ctx.stack
    ensure_topics(stack.kafka_bootstrap, settings)
    store = PostgresEventStore(stack.database_url, pool_size=2)
    hooks = PostgresWebhookStore(stack.database_url)
    scheduler = SchedulerState(stack.database_url)

    def publish(request: TrainingRequest) -> None:
        send_requests(stack.kafka_bootstrap, settings.topic_training_requests, [request])
        # as `tessera train` does: the threshold trigger counts from this request
        scheduler.record_requests([request])

    def close() -> None:
        hooks.close()
        store.close()

    api = TrainingApi(
        store=store, adapters=LocalAdapterStore(settings.adapter_store_dir), hooks=hooks,
        publish=publish,
        resolve_target=lambda: import_target(resolve_base_model(settings),
                                             pipeline_config(settings).personal_train),
        close=close,
    )
    return Component(name="training", http_state={"training": api},
                     grpc_services=[training_grpc_service(api=api, auth=ctx.auth)], close=close)
