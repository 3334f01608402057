"""`tessera infra up | down | status`."""

from __future__ import annotations

import typer

from tessera.infra.stack import LocalStack, StackError, StackInfo
from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import infra_app


def local_stack() -> LocalStack:
    settings = get_settings()
    return LocalStack(
        settings.state_dir / "stack",
        database_url=settings.database_url,
        kafka_bootstrap=settings.kafka_bootstrap,
    )


def stack_info(*, start: bool = True) -> StackInfo:
    """Addresses of PostgreSQL and Kafka for this process: the external ones from settings,
    else the local stack's (started first when `start`). Every command that needs the
    database or the broker gets them here."""
    stack = local_stack()
    if start and not stack.is_up():
        return stack.up()
    return stack.info()


@infra_app.command("up")
def up() -> None:
    """Start the broker and PostgreSQL (or check the external ones) and print addresses."""
    try:
        info = local_stack().up()
    except StackError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"postgres  {info.database_url}  pid={info.postgres_pid or 'external'}")
    typer.echo(f"kafka     {info.kafka_bootstrap}  pid={info.broker_pid or 'external'}")


@infra_app.command("down")
def down() -> None:
    """Stop the local broker and PostgreSQL and wait for them to exit."""
    local_stack().down()
    typer.echo("stopped")


@infra_app.command("status")
def status() -> None:
    """Say whether each part of the stack is running."""
    stack = local_stack()
    info = stack.info()
    pg_up = info.postgres_pid is not None or stack.external_database_url is not None
    broker_up = info.broker_pid is not None or stack.external_bootstrap is not None
    typer.echo(f"postgres  {info.database_url}  {'up' if pg_up else 'down'}")
    typer.echo(f"kafka     {info.kafka_bootstrap}  {'up' if broker_up else 'down'}")
    if not stack.is_up():
        raise typer.Exit(3)
