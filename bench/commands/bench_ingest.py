"""`tessera bench ingest`: HTTP -> Kafka -> worker -> PostgreSQL, with the bare rates."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Final

import typer

from tessera.bench.commands.apps import bench_app

DEFAULT_OUT: Final = Path("bench/results/ingest.json")


@bench_app.command("ingest")
def bench_ingest(
    events: int = typer.Option(50_000, min=1, help="Events sent over HTTP."),
    users: int = typer.Option(1_000, min=1, help="Users they are spread over."),
    batch: int = typer.Option(1_000, min=1, help="Events per request."),
    connections: int = typer.Option(16, min=1, help="Parallel client connections."),
    http_workers: int = typer.Option(1, min=1, help="HTTP server processes."),
    stream_workers: int = typer.Option(
        1, min=1, help="`tessera worker ingest` processes (one consumer group)."
    ),
    max_lag_s: float = typer.Option(
        0.0,
        min=0.0,
        help="The server's admission control (TESSERA_INGEST_MAX_LAG_S); 0: off.",
    ),
    out: Annotated[Path, typer.Option(help="Where the JSON result is written.")] = DEFAULT_OUT,
) -> None:
    """Measure ingest: events/s and accept->durable latency over HTTP to committed in
    PostgreSQL, then bare kafka-python produce / consume and COPY of the same rows.
    Prints the result JSON as the last line and writes it to --out."""
    from tqdm import tqdm

    from tessera.bench.ingest_bench import BenchConfig, run_bench
    from tessera.schemas.settings import get_settings
    from tessera.services.cli.commands.infra import stack_info

    settings = get_settings()
    config = BenchConfig(
        events=events,
        users=users,
        batch=min(batch, settings.max_batch_events),
        connections=connections,
        http_workers=http_workers,
        stream_workers=stream_workers,
        max_lag_s=max_lag_s,
    )
    log_dir = settings.state_dir / "bench-logs"
    with tqdm(total=events, unit="event", desc="bench ingest") as bar:
        result = run_bench(
            settings,
            stack_info(),
            config,
            log_dir=log_dir,
            on_accepted=bar.update,
            report=lambda line: bar.write(line, file=sys.stderr),
        )
    line = json.dumps(result.as_dict())
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")
    typer.echo(line)
