"""One Tessera server process: the HTTP app (uvicorn) and the gRPC server, sharing the
components built once at start-up (`services.components`).

With `http_workers > 1`, uvicorn runs that many HTTP processes on one port; each builds
its own components through `http_worker_app` (a producer is not shared across
processes), while gRPC stays in the parent process.
"""

from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import uvicorn
from fastapi import FastAPI

from tessera.schemas.settings import DEV_ADMIN_KEY, Settings, get_settings
from tessera.services.auth import authenticator_from_database
from tessera.services.components import (
    BackendAddresses,
    Backends,
    Component,
    ServerContext,
    available_optional,
    build_optional,
)
from tessera.services.grpc_auth_gate import KeyGateInterceptor
from tessera.services.grpc_server import GrpcLimits, RunningGrpcServer, start_grpc_server
from tessera.services.http_app import create_app
from tessera.services.ingest.component import build_ingest
from tessera.services.observability.grpc_health import HealthFollower
from tessera.services.observability.readiness import Readiness, backend_checks
from tessera.services.quotas import quotas_from_settings
from tessera.workers.json_logs import configure_logging

log = logging.getLogger(__name__)

# How the parent tells uvicorn's worker processes what to build (they start fresh).
_WITHOUT_ENV: Final = "TESSERA_SERVE_WITHOUT"


class UnsafeBind(RuntimeError):
    """The server would be reachable beyond this machine with the well-known admin key."""


def is_loopback(host: str) -> bool:
    """Whether `host` binds this machine's loopback only (`0.0.0.0`, `::` and names
    other than `localhost` do not: they may be reachable from elsewhere)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_admin_key_for_host(settings: Settings, host: str) -> None:
    """Refuse to serve beyond loopback with the default admin key: it is printed in the
    README and accepted by every development server, so anyone who can reach the port
    could audit, roll back or forget any tenant's users."""
    if is_loopback(host) or settings.admin_key.get_secret_value() != DEV_ADMIN_KEY:
        return
    raise UnsafeBind(
        f"refusing to bind {host}: the admin key is the default {DEV_ADMIN_KEY!r}, which "
        "anyone can guess; set TESSERA_ADMIN_KEY to a secret (e.g. "
        "`export TESSERA_ADMIN_KEY=$(openssl rand -hex 32)`) or bind 127.0.0.1"
    )


@dataclass(frozen=True, slots=True)
class ServeOptions:
    host: str
    http_port: int
    grpc_port: int | None  # None: no gRPC server; 0: a free port
    http_workers: int = 1
    without: frozenset[str] = field(default_factory=frozenset)


def server_context(settings: Settings, stack: Backends) -> ServerContext:
    auth = authenticator_from_database(
        stack.database_url,
        admin_key=settings.admin_key.get_secret_value(),
        cache_ttl_s=settings.auth_cache_ttl_s,
        negative_ttl_s=settings.auth_negative_cache_ttl_s,
    )
    quotas = quotas_from_settings(settings, stack.database_url)
    return ServerContext(settings=settings, stack=stack, auth=auth, quotas=quotas)


def build_components(ctx: ServerContext, *, without: frozenset[str]) -> list[Component]:
    """Ingest always, then every optional component present in this build and not
    left out. A component that fails to build stops the server (no half-configured
    process); components built before it are closed."""
    built = [build_ingest(ctx)]
    try:
        for name in available_optional():
            if name in without:
                log.info("component %s left out (--without)", name)
                continue
            built.append(build_optional(name, ctx))
    except BaseException:
        close_components(built)
        raise
    return built


def close_components(components: Sequence[Component]) -> None:
    for component in reversed(components):
        try:
            component.close()
        except Exception:  # closing must not hide the others or the original error
            log.exception("closing component %s failed", component.name)


def readiness_for(ctx: ServerContext, components: Sequence[Component]) -> Readiness:
    """PostgreSQL, the broker, and the model when this process serves inference."""
    engine = next(
        (c.http_state["inference"] for c in components if "inference" in c.http_state), None
    )
    timeout_s = ctx.settings.readiness_timeout_s
    checks = backend_checks(
        ctx.stack.database_url, ctx.stack.kafka_bootstrap, timeout_s=timeout_s, engine=engine
    )
    return Readiness(checks, timeout_s=timeout_s)


def http_app_for(ctx: ServerContext, components: Sequence[Component]) -> FastAPI:
    state: dict[str, object] = {"auth": ctx.auth, "components": [c.name for c in components]}
    for component in components:
        state.update(component.http_state)
    state["readiness"] = readiness_for(ctx, components)
    # Default: host and process, unique even for several replicas or workers on a host.
    replica_id = ctx.settings.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    return create_app(max_body_bytes=ctx.settings.max_body_bytes, replica_id=replica_id, **state)


def http_worker_app() -> FastAPI:
    """uvicorn factory for worker processes (`http_workers > 1`): builds this process's
    own components from the environment the parent prepared."""
    settings = get_settings()
    configure_logging(json_logs=settings.json_logs)  # a fresh process: the parent's is gone
    if settings.database_url is None or settings.kafka_bootstrap is None:
        raise RuntimeError("http_worker_app needs TESSERA_DATABASE_URL and TESSERA_KAFKA_BOOTSTRAP")
    stack = BackendAddresses(settings.database_url, settings.kafka_bootstrap)
    ctx = server_context(settings, stack)
    without = frozenset(filter(None, os.environ.get(_WITHOUT_ENV, "").split(",")))
    components = build_components(ctx, without=without)
    atexit.register(close_components, components)
    return http_app_for(ctx, components)


def run_server(settings: Settings, stack: Backends, options: ServeOptions) -> None:
    """Serve until SIGINT/SIGTERM: gRPC in background threads, HTTP in this thread.
    `UnsafeBind` (before anything starts) for a non-loopback host with the default key."""
    check_admin_key_for_host(settings, options.host)
    ctx = server_context(settings, stack)
    components = build_components(ctx, without=options.without)
    grpc: RunningGrpcServer | None = None
    follower: HealthFollower | None = None
    try:
        if options.grpc_port is not None:
            services = [s for c in components for s in c.grpc_services]
            grpc = start_grpc_server(
                services,
                host=options.host,
                port=options.grpc_port,
                limits=GrpcLimits.from_settings(settings),
                interceptors=[KeyGateInterceptor(ctx.auth)],
            )
            follower = HealthFollower(
                readiness_for(ctx, components),
                grpc.health,
                [s.name for s in services],
                interval_s=settings.grpc_health_interval_s,
            ).start()
            print(f"gRPC  {options.host}:{grpc.port}", flush=True)
        names = ", ".join(c.name for c in components)
        print(f"HTTP  http://{options.host}:{options.http_port}  components: {names}", flush=True)
        if options.http_workers == 1:
            app = http_app_for(ctx, components)
            uvicorn.run(app, host=options.host, port=options.http_port, log_level="warning")
        else:
            # Workers build their own components from these variables.
            os.environ["TESSERA_DATABASE_URL"] = stack.database_url
            os.environ["TESSERA_KAFKA_BOOTSTRAP"] = stack.kafka_bootstrap
            os.environ[_WITHOUT_ENV] = ",".join(sorted(options.without))
            uvicorn.run(
                "tessera.services.server:http_worker_app",
                factory=True,
                host=options.host,
                port=options.http_port,
                workers=options.http_workers,
                log_level="warning",
            )
    finally:
        if follower is not None:
            follower.stop()
        if grpc is not None:
            grpc.stop()
        close_components(components)
