"""A real admin server for the API and page tests: uvicorn in a thread, gRPC alongside."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import uvicorn

from tessera.infra.stack import free_port
from tessera.services.audit.backend import AdminBackend
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_admin import admin_grpc_service
from tessera.services.grpc_server import start_grpc_server
from tessera.services.http_app import create_app

ADMIN_KEY = "admin-key-for-audit-tests"
KEYS = {"key-acme": "acme", "key-other": "other"}


def authenticator() -> KeyAuthenticator:
    return KeyAuthenticator(lookup=KEYS.get, admin_key=ADMIN_KEY, cache_ttl_s=60)


@dataclass(frozen=True)
class AdminServer:
    http: str  # base URL
    grpc: str  # host:port


@contextmanager
def admin_server(backend: AdminBackend) -> Iterator[AdminServer]:
    auth = authenticator()
    app = create_app(auth=auth, admin=backend, components=["audit"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    grpc_server = start_grpc_server(
        [admin_grpc_service(backend=backend, auth=auth)], host="127.0.0.1", port=0
    )
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield AdminServer(http=f"http://127.0.0.1:{port}", grpc=f"127.0.0.1:{grpc_server.port}")
    finally:
        grpc_server.stop(0.5)
        server.should_exit = True
        thread.join(10)
