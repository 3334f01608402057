"""The `audit` server component: admin HTTP routes' backend and the gRPC Admin service.

Found by `services.components.OPTIONAL_COMPONENTS["audit"]`; `tessera serve` builds it
unless started with `--without audit`.
"""

from __future__ import annotations

from tessera.services.audit.backend import open_backend
from tessera.services.components import Component, ServerContext
from tessera.services.grpc_admin import admin_grpc_service


def build_component(ctx: ServerContext) -> Component:
    backend = open_backend(
        database_url=ctx.stack.database_url,
        adapter_dir=ctx.settings.adapter_store_dir,
        kafka_bootstrap=ctx.stack.kafka_bootstrap,
        revisions_topic=ctx.settings.topic_revisions,
    )
    return Component(
        name="audit",
        http_state={"admin": backend},
        grpc_services=[admin_grpc_service(backend=backend, auth=ctx.auth)],
        close=backend.close,
    )
