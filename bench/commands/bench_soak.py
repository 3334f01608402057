"""`tessera bench soak`: load plus faults (kill -9, restarts) against real processes."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Final

import typer

from tessera.bench.commands.apps import bench_app

DEFAULT_OUT: Final = Path("bench/results/soak.json")


@bench_app.command("soak")
def bench_soak(
    minutes: float = typer.Option(3.0, min=0.5, max=240, help="How long the load runs."),
    fault_every_s: float = typer.Option(20.0, min=5, help="Seconds between faults."),
    users: int = typer.Option(20, min=1, help="Users the load is spread over."),
    batch: int = typer.Option(20, min=1, max=1000, help="Events per ingest request."),
    max_requests: int = typer.Option(200_000, min=1, help="Most requests in all."),
    base_model: Annotated[Path | None, typer.Option(
        help="A local HF model folder to serve and train (default: the tiny random model)."
    )] = None,
    kafka_bootstrap: Annotated[str | None, typer.Option(
        help="An external Kafka (then the broker is not killed); default: embedded Tansu."
    )] = None,
    faults: str = typer.Option(
        "ingest_worker,broker,trainer,postgres,server",
        help="Fault kinds, injected in this order round robin (comma-separated).",
    ),
    out: Annotated[Path, typer.Option(help="Where the JSON result is written.")] = DEFAULT_OUT,
) -> None:
    """Drive ingest and inference at once against `tessera serve`, `worker ingest` and
    `worker train` (restarted by supervisors) on a stack of its own, kill -9 one part at
    a time, then verify the log and the revisions. Last stdout line: the result JSON."""
    from tessera.bench.soak import FAULT_KINDS, SoakConfig, run_soak
    from tessera.schemas.settings import get_settings

    kinds = tuple(k.strip() for k in faults.split(",") if k.strip())
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown or not kinds:
        raise typer.BadParameter(f"unknown fault kinds {sorted(unknown)}; known: "
                                 f"{', '.join(FAULT_KINDS)}", param_hint="--faults")

    config = SoakConfig(minutes=minutes, fault_every_s=fault_every_s, users=users,
                        batch=batch, max_requests=max_requests, base_model=base_model,
                        kafka_bootstrap=kafka_bootstrap, faults=kinds)
    # Kept afterwards: the processes' logs (one per incarnation) explain any loss.
    root = Path(tempfile.mkdtemp(prefix="soak-", dir=get_settings().state_dir.resolve()))
    print(f"soak: state, stack and logs under {root}", file=sys.stderr, flush=True)
    result = run_soak(config, root,
                      report=lambda line: print(line, file=sys.stderr, flush=True))
    line = json.dumps(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(line + "\n")
    typer.echo(line)
