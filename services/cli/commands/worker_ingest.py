"""`tessera worker ingest`: the faust stream worker from `tessera.interactions` to the log."""

from __future__ import annotations

import typer

from tessera.schemas.settings import get_settings
from tessera.services.cli.apps import worker_app
from tessera.services.cli.commands.infra import stack_info


@worker_app.command("ingest")
def ingest(
    loglevel: str = typer.Option("info", help="Log level: debug, info, warning, error."),
) -> None:
    """Consume interactions, validate them and append them to the event log exactly once.

    Uses TESSERA_KAFKA_BOOTSTRAP and TESSERA_DATABASE_URL when set, else the local stack
    (started if needed). Stops cleanly on SIGINT/SIGTERM; after a crash, restart it:
    nothing is lost or duplicated.
    """
    # Imported here: faust and the PostgreSQL driver are heavy for `tessera --help`.
    from tessera.events.kafka import KafkaSetupError
    from tessera.events.postgres_store import PostgresEventStore
    from tessera.events.stream_worker import run_worker
    from tessera.workers.json_logs import configure_logging, logging_dict

    settings = get_settings()
    # TESSERA_JSON_LOGS: one JSON object per line; kafka-python kept to its warnings.
    configure_logging(json_logs=settings.json_logs, level=loglevel.upper())
    info = stack_info()
    store = PostgresEventStore(info.database_url)
    typer.echo(
        f"ingest worker: {settings.topic_interactions} @ {info.kafka_bootstrap} -> "
        f"{info.database_url} (group {settings.stream_group})"
    )
    try:
        run_worker(
            settings,
            bootstrap=info.kafka_bootstrap,
            store=store,
            loglevel=loglevel,
            logging_config=logging_dict(json_logs=settings.json_logs, level=loglevel.upper()),
        )
    except KafkaSetupError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(1) from exc
    finally:
        store.close()
