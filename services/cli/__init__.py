"""The services' CLI: servers, workers and operators' commands; importing each
command module registers its commands. The `tessera` console script is
`tessera.bench.cli`, which adds the benchmarks, the study and the demo."""

from __future__ import annotations

import importlib

from tessera.services.cli.apps import app

# One module per command group; add yours here.
COMMAND_MODULES = [
    "infra",
    "worker_ingest",
    "serve",
    "schemas",
    "audit",
    "corrective",
    "db",
    "tenant",
    "train",
    "adapters",
    "webhooks",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"tessera.services.cli.commands.{_name}")

__all__ = ["app"]
