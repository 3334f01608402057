"""What a server process runs, as pluggable components.

A component is built once per process from `ServerContext` and contributes objects for
the HTTP app's `app.state` (routes find them there) and `GrpcService`s for the gRPC
server. `tessera serve` always builds the core (authentication) and ingest; optional
components are modules found by name, so a feature is added by writing its module,
not by editing the server:

    OPTIONAL_COMPONENTS["inference"] = "tessera.services.inference.component"

Such a module defines `build_component(ctx: ServerContext) -> Component`. When the
module does not exist in this build, the component is skipped with a log line.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from tessera.infra.stack import StackInfo
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_server import GrpcService
from tessera.services.quotas import TenantQuotas

if TYPE_CHECKING:
    from tessera.services.ingest_admission import Admission

log = logging.getLogger(__name__)

# name -> module defining `build_component(ctx) -> Component`.
OPTIONAL_COMPONENTS: Final[dict[str, str]] = {
    "inference": "tessera.services.inference.component",
    "audit": "tessera.services.audit.component",
    "training": "tessera.services.training_component",
}


class ComponentError(RuntimeError):
    """A component asked for could not be built."""


@dataclass(frozen=True, slots=True)
class ServerContext:
    """Everything a component may need to build itself."""

    settings: Settings
    stack: StackInfo
    auth: KeyAuthenticator
    quotas: TenantQuotas | None = None  # per-tenant limits; None: none enforced


@dataclass(slots=True)
class Component:
    name: str
    http_state: dict[str, object] = field(default_factory=dict)
    grpc_services: list[GrpcService] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def build_ingest(ctx: ServerContext) -> Component:
    """Ingest: a Kafka publisher behind `IngestService`, on HTTP and gRPC."""
    from tessera.events.kafka import ensure_topics
    from tessera.events.kafka_publisher import KafkaPublisher
    from tessera.services.grpc_ingest import ingest_grpc_service
    from tessera.services.ingest_service import IngestConfig, IngestService

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
    from tessera.services.ingest_admission import (
        Admission,
        AdmissionConfig,
        postgres_durable_ids,
    )

    if ctx.settings.ingest_max_lag_s <= 0:
        return None
    config = AdmissionConfig(
        max_lag_s=ctx.settings.ingest_max_lag_s, max_wait_s=ctx.settings.ingest_max_wait_s
    )
    return Admission(config, postgres_durable_ids(ctx.stack.database_url)).start()


def available_optional() -> list[str]:
    """Optional components whose module exists in this build."""
    return [name for name, mod in OPTIONAL_COMPONENTS.items() if _module_exists(mod)]


def _module_exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def build_optional(name: str, ctx: ServerContext) -> Component:
    module_name = OPTIONAL_COMPONENTS.get(name)
    if module_name is None:
        known = ", ".join(OPTIONAL_COMPONENTS)
        raise ComponentError(f"unknown component {name!r}; known: {known}")
    if not _module_exists(module_name):
        raise ComponentError(f"component {name!r} is not part of this build ({module_name})")
    builder: Callable[[ServerContext], Component] = importlib.import_module(
        module_name
    ).build_component
    return builder(ctx)
