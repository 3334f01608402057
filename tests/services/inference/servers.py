"""Real servers for API tests: uvicorn on a free port in a thread, the gRPC server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from tessera.infra.stack import free_port
from tessera.services.auth import KeyAuthenticator
from tessera.services.http_app import create_app
from tessera.services.inference.engine import InferenceEngine

KEYS = {"key-t1": "t1", "key-t2": "t2"}


def authenticator() -> KeyAuthenticator:
    return KeyAuthenticator(lookup=KEYS.get, admin_key="admin-key-for-tests", cache_ttl_s=60)


@contextmanager
def http_server(engine: InferenceEngine) -> Iterator[str]:
    """Serve the real app (all routers) with `engine`; yields the base URL."""
    app = create_app(auth=authenticator(), inference=engine, components=["inference"])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
