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
from typing import Final, Protocol

from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_server import GrpcService
from tessera.services.quotas import TenantQuotas

log = logging.getLogger(__name__)

# name -> module defining `build_component(ctx) -> Component`.
OPTIONAL_COMPONENTS: Final[dict[str, str]] = {
    "inference": "tessera.services.inference.component",
    "audit": "tessera.services.audit.component",
    "training": "tessera.services.training_component",
}


class ComponentError(RuntimeError):
    """A component asked for could not be built."""


class Backends(Protocol):
    """Where this process's PostgreSQL and Kafka are. The server does not care who
    started them, so it names only the two addresses: the dev launcher's `StackInfo`
    fits, and so does `BackendAddresses` (the production path never imports the
    launcher)."""

    @property
    def database_url(self) -> str: ...

    @property
    def kafka_bootstrap(self) -> str: ...


@dataclass(frozen=True, slots=True)
class BackendAddresses:
    database_url: str
    kafka_bootstrap: str


@dataclass(frozen=True, slots=True)
class ServerContext:
    """Everything a component may need to build itself."""

    settings: Settings
    stack: Backends  # named for what it held first; any source of the two addresses
    auth: KeyAuthenticator
    quotas: TenantQuotas | None = None  # per-tenant limits; None: none enforced


@dataclass(slots=True)
class Component:
    name: str
    http_state: dict[str, object] = field(default_factory=dict)
    grpc_services: list[GrpcService] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


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
