"""`tessera schemas export [--check]`: the JSON Schema files of the public contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tessera.services.cli.apps import app

schemas_app = typer.Typer(help="Public contracts: JSON Schema export.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")


@schemas_app.command("export")
def export(
    directory: Annotated[
        Path | None,
        typer.Option(help="Where to write (default: schemas/jsonschema in the source tree)."),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when the files are stale.")
    ] = False,
) -> None:
    """Write schemas/jsonschema/*.json from the pydantic models (envelope, payloads, API)."""
    from tessera.schemas.export import SCHEMA_DIR, export_schemas, stale_schemas

    target = directory or SCHEMA_DIR
    if check:
        stale = stale_schemas(target)
        if stale:
            typer.secho(f"stale: {', '.join(stale)}; run `tessera schemas export`", fg="red")
            raise typer.Exit(1)
        typer.echo(f"{target}: up to date")
        return
    changed = export_schemas(target)
    for path in changed:
        typer.echo(f"wrote {path}")
    typer.echo(f"{target}: {len(changed)} file(s) changed")
