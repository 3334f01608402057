"""The FastAPI application: one app, routers from `services/routes/<resource>.py`.

Each router module exposes `router`. Components (event producer, database, inference
engine, ...) are put on `app.state` by whoever builds the app; a route whose component
is absent answers 503 with a message saying which part is not running here.
"""

from __future__ import annotations

import importlib
from typing import Any

from fastapi import FastAPI

# One module per resource; add yours here.
ROUTER_MODULES: list[str] = [
    "health",
    "ingest",
    "generate",
    "openai_compat",
    "admin",
]


def create_app(**components: Any) -> FastAPI:
    """Build the HTTP app. `components` become attributes of `app.state`."""
    app = FastAPI(
        title="Tessera",
        version="0.1.0",
        description="Persistent personal LoRA models over one shared base model.",
    )
    for name, value in components.items():
        setattr(app.state, name, value)
    for module_name in ROUTER_MODULES:
        module = importlib.import_module(f"tessera.services.routes.{module_name}")
        app.include_router(module.router)
    return app
