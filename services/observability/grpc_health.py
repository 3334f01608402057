"""gRPC health follows readiness: the standard health service says NOT_SERVING for the
whole server and each service while `/readyz` would answer 503, so gRPC load balancers
and `grpc_health_probe` take the replica out just as HTTP proxies do."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from grpc_health.v1 import health, health_pb2

from tessera.services.observability.readiness import Readiness


class HealthFollower:
    """A daemon thread that sets every service's status from `readiness` each interval."""

    def __init__(
        self,
        readiness: Readiness,
        servicer: health.HealthServicer,
        services: Sequence[str],
        *,
        interval_s: float = 5.0,
    ) -> None:
        self._readiness = readiness
        self._servicer = servicer
        self._services = ["", *services]  # "": the server as a whole
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-health", daemon=True)

    def start(self) -> HealthFollower:
        self.update()
        self._thread.start()
        return self

    def update(self) -> bool:
        ready = self._readiness.report().ready
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if ready
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._services:
            self._servicer.set(name, status)
        return ready

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.update()
