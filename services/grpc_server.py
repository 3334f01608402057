"""The gRPC server: one `grpc.Server` for every Tessera service, with health and reflection.

Each feature contributes `GrpcService`s (a full service name and a function that adds
its servicer to a server); `build_grpc_server` mounts them all, marks each SERVING in
the standard health service (`grpc.health.v1.Health`) and lists them for reflection, so
`grpcurl -plaintext HOST:PORT list` shows what this process serves.

The server is the synchronous, thread-pool kind: handlers may block (waiting for broker
acks, or for an inference batch submitted to an asyncio loop elsewhere with
`asyncio.run_coroutine_threadsafe`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tessera.schemas.settings import Settings

log = logging.getLogger(__name__)


class GrpcServerError(RuntimeError):
    """The server could not bind its address."""


@dataclass(frozen=True, slots=True)
class GrpcService:
    """One service to mount: its full proto name (`tessera.v1.Ingest`) and a function
    that adds its servicer (`add_IngestServicer_to_server(servicer, server)`)."""

    name: str
    register: Callable[[grpc.Server], None]


@dataclass(slots=True)
class RunningGrpcServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer

    def stop(self, grace_s: float = 5.0) -> None:
        """Mark every service NOT_SERVING, then stop, letting calls in flight finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace_s).wait(grace_s + 1.0)


@dataclass(frozen=True, slots=True)
class GrpcLimits:
    """The server's thread pool and largest request message (defaults: `Settings`')."""

    # Every handler holds a thread while it runs, and an inference stream holds one for
    # its whole generation: the pool must outnumber a full batch, or streams (or one
    # tenant's stalled ingest calls) starve every other service on this server.
    workers: int = 32 + 16
    # Requests are capped like HTTP bodies (max_body_bytes): one size limit per server.
    max_message_bytes: int = 16 * 1024 * 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> GrpcLimits:
        return cls(
            workers=settings.inference_max_batch + settings.grpc_spare_workers,
            max_message_bytes=settings.max_body_bytes,
        )


def start_grpc_server(
    services: Sequence[GrpcService],
    *,
    host: str,
    port: int,
    limits: GrpcLimits | None = None,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
) -> RunningGrpcServer:
    """Build, bind and start a server with `services`, health and reflection. `port` 0
    picks a free port; the bound one is returned. `interceptors` see every call first
    (e.g. `grpc_auth_gate`: keys checked before a message is decoded)."""
    limits = limits or GrpcLimits()
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            # Answers are ours (an audit lineage can be long): not capped below gRPC's own.
            ("grpc.max_send_message_length", 64 * 1024 * 1024),
        ],
        interceptors=list(interceptors),
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in services:
        service.register(server)
        health_servicer.set(service.name, health_pb2.HealthCheckResponse.SERVING)
    # The empty name is "the server as a whole".
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    names = [s.name for s in services]
    names += [health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise GrpcServerError(f"gRPC could not bind {host}:{port} (in use?)")
    server.start()
    log.info("gRPC serving %s on %s:%d", ", ".join(s.name for s in services), host, bound)
    return RunningGrpcServer(server=server, port=bound, health=health_servicer)
