"""The `tessera` command (console script): the services' CLI (`tessera.services.cli`:
servers, workers, operators' commands) plus the benchmarks, the study and the demo.

The root lives here because bench may import services and not the reverse: the
services' CLI stays free of benchmark code, and children started by the harnesses run
`tessera.services.cli` alone.
"""

from __future__ import annotations

import importlib

from tessera.services.cli import app

# One module per command group under tessera.bench.commands; add yours here.
COMMAND_MODULES = [
    "bench_kernel",
    "bench_serve",
    "bench_train",
    "bench_night",
    "demo",
    "bench_ingest",
    "study",
    "bench_soak",
    "bench_catalog",
    "study_probe",
    "bench_residency",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"tessera.bench.commands.{_name}")

__all__ = ["app"]
