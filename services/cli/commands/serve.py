"""`tessera serve`: the HTTP and gRPC servers in one process."""

from __future__ import annotations

import typer

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import app
from tessera.services.cli.commands.infra import stack_info


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: settings.http_host)."),
    http_port: int | None = typer.Option(None, help="HTTP port (default: settings.http_port)."),
    grpc_port: int | None = typer.Option(
        None, help="gRPC port; 0 picks a free one (default: settings.grpc_port)."
    ),
    no_grpc: bool = typer.Option(False, "--no-grpc", help="Serve HTTP only."),
    workers: int | None = typer.Option(
        None, min=1, help="HTTP processes (default: settings.http_workers)."
    ),
    without: list[str] = typer.Option(  # noqa: B008 (typer declares options this way)
        [], "--without", help="Leave out an optional component (inference, audit); repeatable."
    ),
    loglevel: str = typer.Option("warning", help="Log level: debug, info, warning, error."),
) -> None:
    """Serve the API: ingest always; inference and audit when their modules are part of
    this build (leave them out with --without). Uses TESSERA_KAFKA_BOOTSTRAP and
    TESSERA_DATABASE_URL when set, else the local stack (started if needed)."""
    from tessera.services.components import ComponentError
    from tessera.services.grpc_server import GrpcServerError
    from tessera.services.server import (
        ServeOptions,
        UnsafeBind,
        check_admin_key_for_host,
        run_server,
    )
    from tessera.workers.json_logs import configure_logging

    settings = get_settings()
    configure_logging(json_logs=settings.json_logs, level=loglevel.upper())
    options = ServeOptions(
        host=host or settings.http_host,
        http_port=settings.http_port if http_port is None else http_port,
        grpc_port=None if no_grpc else (settings.grpc_port if grpc_port is None else grpc_port),
        http_workers=workers or settings.http_workers,
        without=frozenset(without),
    )
    try:
        check_admin_key_for_host(settings, options.host)  # before the stack starts
        run_server(settings, stack_info(), options)
    except (ComponentError, GrpcServerError, UnsafeBind) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
