"""`tessera bench catalog`: the catalog with N users (default a million) under load."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Final

import typer

from tessera.bench.commands.apps import bench_app
from tessera.services.cli.commands.infra import stack_info

DEFAULT_OUT: Final = Path("bench/results/catalog.json")
DATABASE: Final = "tessera_bench_catalog"


@bench_app.command("catalog")
def bench_catalog(
    users: Annotated[int, typer.Option(min=2, help="Users to fill the catalog with.")] = 1_000_000,
    tenants: Annotated[int, typer.Option(min=1, help="Tenants the users belong to.")] = 4,
    clients: Annotated[int, typer.Option(min=1, help="Threads issuing calls at once.")] = 8,
    lookups: Annotated[int, typer.Option(min=1, help="Head lookups timed.")] = 20_000,
    lineages: Annotated[int, typer.Option(min=1, help="Lineage queries timed.")] = 2_000,
    promotions: Annotated[int, typer.Option(min=1, help="Promotions timed.")] = 400,
    forgets: Annotated[int, typer.Option(min=1, help="Forgets timed.")] = 200,
    rebuild: Annotated[bool, typer.Option(
        help="Also time a rebuild of the projections (streamed: bounded memory).")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the filled database afterwards.")] = False,
    out: Annotated[Path, typer.Option(help="Where to write the JSON result.")] = DEFAULT_OUT,
) -> None:
    """Fill a fresh database (`tessera_bench_catalog` on the server of
    TESSERA_DATABASE_URL, else of the embedded stack) with N users' events, revisions
    and heads, then time head lookups, lineage, the nightly planning scan, promotions,
    forgets and a rebuild. The last line printed is the JSON result (also in --out)."""
    from tessera.bench.catalog import CatalogBenchConfig, run_catalog_bench
    from tessera.events import bulk_fill
    from tessera.events.migrate import migrate

    try:
        config = CatalogBenchConfig(
            users=users, tenants=tenants, clients=clients, lookups=lookups,
            lineages=lineages, promotions=promotions, forgets=forgets, rebuild=rebuild,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    server = stack_info().database_url
    url = bulk_fill.fresh_database(server, DATABASE)
    try:
        migrate(url)
        result = run_catalog_bench(url, config, progress=lambda line: typer.echo(line, err=True))
    finally:
        if not keep:
            bulk_fill.drop_database(server, DATABASE)
    line = json.dumps(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(line)
