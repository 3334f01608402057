"""Real servers for API tests: uvicorn on a free port in a thread, the gRPC server, and
both over one engine on the tiny model."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import uvicorn
from transformers import AutoModelForCausalLM, AutoTokenizer

from tessera.bench.tiny_model import build_tiny_model
from tessera.infra.stack import free_port
from tessera.schemas.settings import Settings
from tessera.services.auth import KeyAuthenticator
from tessera.services.grpc_inference import inference_grpc_service
from tessera.services.grpc_server import start_grpc_server
from tessera.services.http_app import create_app
from tessera.services.inference.build import build_engine
from tessera.services.inference.engine import InferenceEngine
from tessera.services.inference.revisions import BASE, Served
from tessera.services.inference.tokens import HFTokenizer, as_hf_tokenizer

from .helpers import DirStore

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


def base_for_everyone(tenant: str, user: str) -> Served:
    """A resolver that serves the base model to every user."""
    return BASE


@dataclass
class TinyServers:
    """HTTP and gRPC over one engine on the tiny model; `base` is an untouched copy of the
    weights the engine serves, for reference generations."""

    url: str
    grpc_target: str
    engine: InferenceEngine
    base: torch.nn.Module
    tokenizer: HFTokenizer
    blobs: Path


@contextmanager
def tiny_model_servers(root: Path, settings: Settings) -> Iterator[TinyServers]:
    folder = build_tiny_model(root / "tiny")
    base = AutoModelForCausalLM.from_pretrained(folder)
    base.eval()  # type: ignore[no-untyped-call]  # transformers leaves eval() unannotated
    tokenizer = as_hf_tokenizer(AutoTokenizer.from_pretrained(folder))
    blobs = root / "blobs"
    engine = build_engine(
        copy.deepcopy(base), tokenizer, DirStore(blobs), base_for_everyone, settings=settings
    ).start()
    grpc_server = start_grpc_server(
        [inference_grpc_service(engine=engine, auth=authenticator())], host="127.0.0.1", port=0
    )
    try:
        with http_server(engine) as url:
            yield TinyServers(url, f"127.0.0.1:{grpc_server.port}", engine, base, tokenizer, blobs)
    finally:
        grpc_server.stop(0.5)
        engine.stop()
