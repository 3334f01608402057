"""`tessera db migrate | rebuild-projections`: event store maintenance."""

from __future__ import annotations

import typer

from tessera.services.cli.apps import db_app
from tessera.services.cli.commands.infra import stack_info


@db_app.command("migrate")
def migrate_command() -> None:
    """Apply the SQL migrations not yet applied (re-running is a no-op)."""
    from tessera.events.migrate import migrate
    from tessera.events.store import EventStoreError

    url = stack_info().database_url
    try:
        applied = migrate(url)
    except EventStoreError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    if applied:
        for version in applied:
            typer.echo(f"applied  {version}")
    else:
        typer.echo("up to date: no migration to apply")


@db_app.command("rebuild-projections")
def rebuild_projections_command() -> None:
    """Replay the whole log into users, revisions and heads (appends wait meanwhile)."""
    from tqdm import tqdm

    from tessera.events.migrate import migrate
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.events.rebuild import rebuild_projections
    from tessera.events.store import EventStoreError

    url = stack_info().database_url
    try:
        migrate(url)
        with PostgresEventStore(url) as store:
            total = store.head_position()
        with tqdm(total=total, unit="event", desc="replaying") as bar:
            report = rebuild_projections(url, on_progress=bar.update)
    except EventStoreError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(
        f"rebuilt from {report.events} events: {report.users} users, "
        f"{report.revisions} revisions, {report.heads} heads"
    )
