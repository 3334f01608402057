"""The `bench` and `study` sub-apps of the `tessera` root app; bench commands register
onto these (the root app itself is the services' CLI, `tessera.services.cli.apps`)."""

from __future__ import annotations

import typer

from tessera.services.cli.apps import app

bench_app = typer.Typer(
    help="Benchmarks: print one JSON object as the last line.", no_args_is_help=True
)
study_app = typer.Typer(help="Studies on real data.", no_args_is_help=True)

app.add_typer(bench_app, name="bench")
app.add_typer(study_app, name="study")
