"""The `tessera` command: importing each command module registers its commands."""

from __future__ import annotations

import importlib

from tessera.services.cli_apps import app

# One module per command group; add yours here.
COMMAND_MODULES = [
    "bench_kernel",
    "bench_serve",
    "bench_train",
    "bench_night",
    "infra",
    "worker_ingest",
    "serve",
    "schemas",
    "demo",
    "bench_ingest",
    "audit",
    "corrective",
    "db",
    "tenant",
    "train",
    "study",
    "bench_soak",
    "bench_catalog",
    "study_probe",
    "adapters",
    "webhooks",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"tessera.services.commands.{_name}")

__all__ = ["app"]
